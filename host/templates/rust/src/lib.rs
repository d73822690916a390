//! The {{name}} guest: routes services with proto `{{name}}` by Host header, through a map from
//! domain to backend, to their ready endpoints.
//!
//! Settings (`--set {{name}}.KEY=VALUE`): `bind` (default `:8080`).

use wasmconfd_guest::{
    Cluster, Description, Fragment, Guest, MapFile, RenderError, Section, args, backend_name,
    servers, warn,
};

const PROTO: &str = "{{name}}";

struct {{type}};

impl Guest for {{type}} {
    fn describe() -> Description {
        Description::new([PROTO], [("bind", "the frontend's bind address (default :8080)")])
            // The annotations and labels it reads (keys, or prefixes ending in `*`): its
            // services carry no others. Add the keys of your own annotations here.
            .reading(["wasmconfd.io/*"], [])
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let hosts_map = cluster.map_path("{{name}}.map");
        let frontend = Section::frontend(PROTO)
            .with("mode", ["http"])
            .with("bind", [cluster.setting_or("bind", ":8080")])
            .with(
                "http-request",
                args![
                    "set-var(txn.backend)",
                    format!("req.hdr(host),field(1,:),lower,map_str({hosts_map})"),
                ],
            )
            .with(
                "use_backend",
                ["%[var(txn.backend)]", "if", "{", "var(txn.backend)", "-m", "found", "}"],
            );

        let mut hosts = MapFile::new("{{name}}.map");
        let mut sections = vec![frontend];
        for service in cluster.services_with_proto(PROTO) {
            let backend = backend_name(PROTO, service);
            for domain in &service.domains {
                if domain.starts_with('*') {
                    warn!(
                        "service {}: wildcard domain {domain} is not supported: skipped",
                        service.id()
                    );
                    continue;
                }
                hosts.push(domain, &backend);
            }
            let mut section = Section::backend(backend).with("mode", ["http"]);
            section.extend(servers(service));
            sections.push(section);
        }
        hosts.entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Fragment {
            sections,
            maps: vec![hosts],
        })
    }
}

wasmconfd_guest::export!({{type}});

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{self, cluster, service};

    #[test]
    fn routes_each_domain_to_the_ready_endpoints() {
        let web = service("shop", "web", PROTO)
            .domain("shop.example.com")
            .endpoint("10.0.0.1", 8080, true)
            .endpoint("10.0.0.2", 8080, false)
            .build();
        // As the host hands it over: only the services of its protos, with the annotations and
        // labels it declares reading.
        let out = testing::render::<{{type}}>(cluster([web])).unwrap();
        assert_eq!(out.maps[0].entries[0].key, "shop.example.com");
        let servers: Vec<_> = out.sections[1]
            .directives
            .iter()
            .filter(|d| d.keyword == "server")
            .collect();
        assert_eq!(servers.len(), 1, "only ready endpoints are servers");
    }
}
