//! The bundled `https` guest: TLS passthrough on one frontend, routing by SNI.
//!
//! The TLS ClientHello is inspected (never decrypted), the server name looked up in map files
//! (`https-sni.map` for exact names, `https-wildcards.map` for `*.example.com` as a suffix), and
//! the connection passed to the service as is. Unknown names are closed.
//!
//! Settings: `bind` (default `:443`), `frontend` (default `https`), `inspect-delay` (default `5s`).

use wasmconfd_guest::{
    Cluster, Description, DomainRoutes, Fragment, Guest, RenderError, Section, backend_name, log,
    servers,
};

struct Https;

impl Guest for Https {
    fn describe() -> Description {
        Description::new(
            ["https"],
            [
                ("bind", "the frontend's bind address (default :443)"),
                ("frontend", "the frontend's name (default https)"),
                (
                    "inspect-delay",
                    "how long to wait for the TLS ClientHello (default 5s)",
                ),
            ],
        )
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let sni = "req.ssl_sni,lower";
        let hello = ["{", "req_ssl_hello_type", "1", "}"];
        let found = ["{", "var(txn.backend)", "-m", "found", "}"];
        let words = |first: &[&str], rest: &[&[&str]]| -> Vec<String> {
            first
                .iter()
                .chain(rest.iter().flat_map(|r| r.iter()))
                .map(|s| s.to_string())
                .collect()
        };

        let frontend = Section::frontend(cluster.setting_or("frontend", "https"))
            .with("mode", ["tcp"])
            .with("bind", [cluster.setting_or("bind", ":443")])
            .with("option", ["tcplog"])
            .with(
                "tcp-request",
                ["inspect-delay", cluster.setting_or("inspect-delay", "5s")],
            )
            .with(
                "tcp-request",
                words(
                    &[
                        "content",
                        "set-var(txn.backend)",
                        &format!("{sni},map_str({})", cluster.map_path("https-sni.map")),
                        "if",
                    ],
                    &[&hello],
                ),
            )
            .with(
                "tcp-request",
                words(
                    &[
                        "content",
                        "set-var(txn.backend)",
                        &format!("{sni},map_end({})", cluster.map_path("https-wildcards.map")),
                        "if",
                    ],
                    &[&hello, &["!"], &found],
                ),
            )
            .with(
                "tcp-request",
                words(&["content", "accept", "if"], &[&hello]),
            )
            .with(
                "use_backend",
                words(&["%[var(txn.backend)]", "if"], &[&found]),
            );

        let mut routes = DomainRoutes::new("https-sni.map", "https-wildcards.map", "server name");
        let mut sections = vec![frontend];
        for service in cluster.services_with_proto("https") {
            if service.domains.is_empty() {
                log::warn(&format!(
                    "service {} has proto https but no domain: skipped",
                    service.id()
                ));
                continue;
            }
            let backend = backend_name("https", service);
            routes.add(service, &backend);
            let mut section = Section::backend(backend).with("mode", ["tcp"]);
            section.extend(servers(service));
            sections.push(section);
        }
        Ok(Fragment {
            sections,
            maps: routes.into_maps(),
        })
    }
}

wasmconfd_guest::export!(Https);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{cluster, service};

    #[test]
    fn passes_tls_through_by_sni() {
        let api = service("prod", "api", "https")
            .domain("api.example.com")
            .endpoint("10.0.1.5", 8443, true)
            .build();
        let out = Https::render(cluster([api])).unwrap();
        assert_eq!(out.maps[0].entries[0].key, "api.example.com");
        assert_eq!(out.maps[0].entries[0].value, "https_prod_api");
        let backend = &out.sections[1];
        assert_eq!(
            backend.directives[0].args,
            ["tcp"],
            "passthrough backends are mode tcp"
        );
        assert_eq!(backend.directives[1].args[1], "10.0.1.5:8443");
    }

    #[test]
    fn other_protos_are_ignored() {
        let web = service("prod", "web", "http")
            .domain("web.example.com")
            .build();
        assert_eq!(Https::render(cluster([web])).unwrap().sections.len(), 1);
    }
}
