//! The bundled `global` and `defaults` sections.
//!
//! Settings: `admin-socket` (the path of HAProxy's admin socket, through which wasmconfd changes
//! servers and map entries without a reload; default `/run/haproxy/admin.sock`, as in Debian's
//! configuration; `none` for no socket, so that every change reloads), `admin-socket-group` (the
//! group the socket belongs to, so that a wasmconfd in that group but not root can use it), `log` (HAProxy `log`
//! arguments, whitespace-separated, default `stdout format raw local0`; `none` for no logging),
//! `maxconn` (default 4096), `timeout-connect` (5s), `timeout-client` (60s), `timeout-server`
//! (60s).

use wasmconfd_guest::{Cluster, Description, Fragment, Guest, RenderError, Section};

struct Base;

impl Guest for Base {
    fn describe() -> Description {
        Description::new(
            [],
            [
                ("maxconn", "global maxconn (default 4096)"),
                (
                    "log",
                    "global log target, or `none` (default `stdout format raw local0`)",
                ),
                (
                    "admin-socket",
                    "the Runtime API socket, or `none` (default /run/haproxy/admin.sock)",
                ),
                (
                    "admin-socket-group",
                    "the group the admin socket belongs to (default: HAProxy's own)",
                ),
                ("timeout-connect", "default connect timeout (default 5s)"),
                ("timeout-client", "default client timeout (default 60s)"),
                ("timeout-server", "default server timeout (default 60s)"),
            ],
        )
        .reading([], [])
        .without_endpoint_details()
        .without_ports()
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let maxconn: u32 = cluster.parsed_setting("maxconn", 4096)?;
        let log = cluster.setting_or("log", "stdout format raw local0");
        let admin_socket = cluster.setting_or("admin-socket", "/run/haproxy/admin.sock");

        let mut global = Section::global()
            // Relative paths (maps, certificates) resolve against the configuration file's
            // directory, so a configuration checks and runs wherever it is written.
            .with("default-path", ["config"])
            .with("maxconn", [maxconn.to_string()]);
        if admin_socket != "none" {
            let mut stats = vec!["socket", admin_socket, "mode", "660", "level", "admin"];
            if let Some(group) = cluster.setting("admin-socket-group") {
                stats.extend(["group", group]);
            }
            global.push("stats", stats);
        }
        if log != "none" {
            global.push("log", log.split_whitespace());
        }

        let defaults = Section::defaults()
            .with("mode", ["http"])
            .with("log", ["global"])
            .with("option", ["dontlognull"])
            // A request whose server refuses it (an endpoint that just went away) is retried on
            // another server.
            .with("option", ["redispatch"])
            .with(
                "timeout",
                ["connect", cluster.setting_or("timeout-connect", "5s")],
            )
            .with(
                "timeout",
                ["client", cluster.setting_or("timeout-client", "60s")],
            )
            .with(
                "timeout",
                ["server", cluster.setting_or("timeout-server", "60s")],
            );

        Ok(Fragment {
            sections: vec![global, defaults],
            maps: Vec::new(),
        })
    }
}

wasmconfd_guest::export!(Base);

// Each call runs in a fresh instance: see `OneCallAllocator`.
#[global_allocator]
static ALLOCATOR: wasmconfd_guest::OneCallAllocator = wasmconfd_guest::OneCallAllocator::new();

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{cluster, with_setting};

    #[test]
    fn log_none_drops_the_log_line() {
        let out = Base::render(with_setting(cluster([]), "log", "none")).unwrap();
        assert!(
            out.sections[0]
                .directives
                .iter()
                .all(|d| d.keyword != "log")
        );
    }

    #[test]
    fn the_admin_socket_is_on_unless_set_to_none() {
        let stats = |cluster| {
            let out = Base::render(cluster).unwrap();
            out.sections[0]
                .directives
                .iter()
                .find(|d| d.keyword == "stats")
                .map(|d| d.args.clone())
        };
        assert_eq!(
            stats(cluster([])).unwrap()[..2],
            ["socket", "/run/haproxy/admin.sock"]
        );
        assert_eq!(
            stats(with_setting(cluster([]), "admin-socket", "/tmp/a.sock")).unwrap()[1],
            "/tmp/a.sock"
        );
        assert_eq!(
            stats(with_setting(cluster([]), "admin-socket", "none")),
            None
        );
        assert_eq!(
            stats(with_setting(cluster([]), "admin-socket-group", "haproxy")).unwrap()[6..],
            ["group", "haproxy"]
        );
    }

    #[test]
    fn bad_maxconn_names_the_setting() {
        let err = Base::render(with_setting(cluster([]), "maxconn", "lots")).unwrap_err();
        assert!(matches!(err, RenderError::InvalidSetting(e) if e.key == "maxconn"));
    }
}
