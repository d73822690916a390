//! The bundled `redis` guest: one TCP listener per service on its `wasmconfd.io/listen-port`,
//! sending traffic only to the master, found by a health check that asks each server
//! `INFO replication` and expects `role:master` (as python-confd did).
//!
//! Two services on one listen port is an error for the younger one, which is left out; the
//! older one keeps the port.
//!
//! Settings: `bind-address` (default empty: all addresses), `check-interval` (default `2s`).

use std::collections::BTreeMap;
use wasmconfd_guest::{
    Cluster, Description, Fragment, Guest, RenderError, Section, Service, backend_name, log,
    servers,
};

struct Redis;

/// Health check conversation; `send-binary` takes hex, so no control characters are needed.
const CHECK: &[(&str, &str)] = &[
    ("send-binary", "PING\r\n"),
    ("expect", "+PONG"),
    ("send-binary", "INFO replication\r\n"),
    ("expect", "role:master"),
    ("send-binary", "QUIT\r\n"),
    ("expect", "+OK"),
];

impl Guest for Redis {
    fn describe() -> Description {
        Description::new(
            ["redis"],
            [
                (
                    "bind-address",
                    "the address the listeners bind (default empty: all)",
                ),
                (
                    "check-interval",
                    "how often each server is asked for its role (default 2s)",
                ),
            ],
        )
        .reading([], [])
        .without_endpoint_details()
        .without_ports()
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let bind_address = cluster.setting_or("bind-address", "");
        let interval = cluster.setting_or("check-interval", "2s");

        let mut services: Vec<_> = cluster.services_with_proto("redis").collect();
        // Oldest first, so the older service keeps a contested port.
        services.sort_by_key(|s| {
            (
                s.creation_time.unwrap_or(i64::MAX),
                s.namespace.clone(),
                s.name.clone(),
            )
        });
        let mut ports: BTreeMap<u16, &Service> = BTreeMap::new();
        for service in services {
            let Some(port) = service.listen_port else {
                log::warn(&format!(
                    "service {} has proto redis but no wasmconfd.io/listen-port annotation: skipped",
                    service.id()
                ));
                continue;
            };
            if let Some(owner) = ports.get(&port) {
                log::error(&format!(
                    "service {} wants listen port {port}, which service {} already has: skipped",
                    service.id(),
                    owner.id()
                ));
                continue;
            }
            ports.insert(port, service);
        }

        let sections = ports
            .into_iter()
            .map(|(port, service)| {
                let mut listen = Section::listen(backend_name("redis", service))
                    .with("mode", ["tcp"])
                    .with("bind", [format!("{bind_address}:{port}")])
                    .with("option", ["tcplog"])
                    .with("option", ["tcp-check"])
                    .with("tcp-check", ["connect"]);
                for (action, text) in CHECK {
                    match *action {
                        "send-binary" => {
                            listen.push("tcp-check", ["send-binary".to_string(), hex(text)])
                        }
                        _ => listen.push("tcp-check", ["expect", "string", text]),
                    }
                }
                listen.push("default-server", ["inter", interval]);
                listen.extend(servers(service));
                listen
            })
            .collect();

        Ok(Fragment {
            sections,
            maps: Vec::new(),
        })
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

wasmconfd_guest::export!(Redis);

// Each call runs in a fresh instance: see `OneCallAllocator`.
#[global_allocator]
static ALLOCATOR: wasmconfd_guest::OneCallAllocator = wasmconfd_guest::OneCallAllocator::new();

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{cluster, service, take_logs};

    #[test]
    fn listens_on_the_annotated_port_and_checks_for_master() {
        let cache = service("data", "cache", "redis")
            .listen_port(6379)
            .endpoint("10.0.2.1", 6379, true)
            .build();
        let out = Redis::render(cluster([cache])).unwrap();
        let listen = &out.sections[0];
        assert_eq!(listen.name.as_deref(), Some("redis_data_cache"));
        assert!(
            listen
                .directives
                .iter()
                .any(|d| d.keyword == "bind" && d.args == [":6379"])
        );
        assert!(
            listen
                .directives
                .iter()
                .any(|d| d.args == ["expect", "string", "role:master"])
        );
        assert!(
            listen
                .directives
                .iter()
                .any(
                    |d| d.args.first().map(String::as_str) == Some("send-binary")
                        && d.args[1] == "50494e470d0a"
                )
        );
    }

    #[test]
    fn the_younger_of_two_services_on_one_port_is_left_out() {
        let old = service("a", "old", "redis")
            .listen_port(6379)
            .created(100)
            .build();
        let young = service("a", "aaa-young", "redis")
            .listen_port(6379)
            .created(200)
            .build();
        let out = Redis::render(cluster([young, old])).unwrap();
        assert_eq!(out.sections.len(), 1);
        assert_eq!(out.sections[0].name.as_deref(), Some("redis_a_old"));
        let logs = take_logs();
        assert!(
            logs.iter()
                .any(|(_, m)| m.contains("a/aaa-young") && m.contains("a/old")),
            "{logs:?}"
        );
    }
}
