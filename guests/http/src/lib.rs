//! The bundled `http` guest: one frontend routing by Host header to one backend per service.
//!
//! Hosts are looked up in map files (`http-hosts.map` for exact names, `http-wildcards.map` for
//! `*.example.com` as a suffix), so thousands of domains stay one lookup, and a new domain can
//! later be added through the Runtime API without a reload. Unknown hosts get a 404.
//!
//! A service of proto `https` annotated `wasmconfd.io/ssl-redirect: "true"` has plain HTTP
//! requests for its domains redirected to HTTPS (308, which keeps the method), unless an http
//! service routes the same domain.
//!
//! Settings: `bind` (default `:80`), `frontend` (the frontend's name, default `http`).

use wasmconfd_guest::{
    Cluster, Context, Description, DomainRoutes, Fragment, Guest, Placement, RenderError, Section,
    Service, backend_name, log, not_found_backend, servers, servers_by_domain,
};

/// The guest; public so that `host/tests/bench_render.rs` can run its code natively.
pub struct Http;

const DEFAULT_BACKEND: &str = "http_default";

impl Guest for Http {
    fn describe() -> Description {
        Description::new(
            ["http", "https"],
            [
                ("bind", "the frontend's bind address (default :80)"),
                ("frontend", "the frontend's name (default http)"),
            ],
        )
        .reading(["wasmconfd.io/ssl-redirect"], [])
        .without_endpoint_details()
        .without_ports()
        .with_servers_apart()
    }

    /// Each http service's servers, into its backend (a service without a domain has none).
    fn servers(_: Context, services: Vec<Service>) -> Result<Vec<Vec<Placement>>, RenderError> {
        Ok(servers_by_domain("http", &services))
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let hosts_map = cluster.map_path("http-hosts.map");
        let wildcards_map = cluster.map_path("http-wildcards.map");
        let host = "req.hdr(host),field(1,:),lower";

        let mut frontend = Section::frontend(cluster.setting_or("frontend", "http"))
            .with("mode", ["http"])
            .with("bind", [cluster.setting_or("bind", ":80")])
            .with("option", ["httplog"])
            .with("option", ["forwardfor"])
            .with("http-request", ["set-header", "X-Forwarded-Proto", "http"])
            .with(
                "http-request",
                [
                    "set-var(txn.backend)".to_string(),
                    format!("{host},map_str({hosts_map})"),
                ],
            )
            .with(
                "http-request",
                [
                    "set-var(txn.backend)".to_string(),
                    format!("{host},map_end({wildcards_map})"),
                ]
                .into_iter()
                .chain(if_not_found("unless")),
            );
        let mut redirects =
            DomainRoutes::new("http-redirects.map", "http-redirect-wildcards.map", "host");
        for service in cluster.services_with_proto("https") {
            if service.annotation("wasmconfd.io/ssl-redirect") == Some("true") {
                redirects.add(service, "https");
            }
        }
        let redirects = redirects.into_maps();
        let mut maps = Vec::new();
        if redirects.iter().any(|map| !map.entries.is_empty()) {
            for (map, lookup) in redirects.iter().zip(["map_str", "map_end"]) {
                let path = cluster.map_path(&map.name);
                frontend.push(
                    "http-request",
                    ["redirect", "scheme", "https", "code", "308", "if", "!"]
                        .into_iter()
                        .map(String::from)
                        .chain(backend_found())
                        .chain([
                            "{".to_string(),
                            format!("{host},{lookup}({path})"),
                            "-m".into(),
                            "found".into(),
                            "}".into(),
                        ]),
                );
            }
            maps = redirects;
        }
        frontend.push(
            "use_backend",
            ["%[var(txn.backend)]".to_string()]
                .into_iter()
                .chain(if_not_found("if")),
        );
        frontend.push("default_backend", [DEFAULT_BACKEND]);

        let default_backend = not_found_backend(DEFAULT_BACKEND, "no service for this host");

        let mut routes = DomainRoutes::new("http-hosts.map", "http-wildcards.map", "host");
        let mut sections = vec![frontend, default_backend];
        for service in cluster.services_with_proto("http") {
            if service.domains.is_empty() {
                log::warn(&format!(
                    "service {} has proto http but no domain: skipped",
                    service.id()
                ));
                continue;
            }
            let backend = backend_name("http", service);
            routes.add(service, &backend);
            let mut section = Section::backend(backend).with("mode", ["http"]);
            section.extend(servers(service));
            sections.push(section);
        }
        let mut all_maps = routes.into_maps();
        all_maps.extend(maps);
        Ok(Fragment {
            sections,
            maps: all_maps,
        })
    }
}

/// `if { var(txn.backend) -m found }`, or with `unless`.
fn if_not_found(word: &str) -> impl Iterator<Item = String> {
    std::iter::once(word.to_string()).chain(backend_found())
}

/// `{ var(txn.backend) -m found }`.
fn backend_found() -> impl Iterator<Item = String> {
    ["{", "var(txn.backend)", "-m", "found", "}"]
        .into_iter()
        .map(String::from)
}

wasmconfd_guest::export!(Http);

// Each call runs in a fresh instance: see `OneCallAllocator`.
#[global_allocator]
static ALLOCATOR: wasmconfd_guest::OneCallAllocator = wasmconfd_guest::OneCallAllocator::new();

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{self, cluster, service, take_logs};

    #[test]
    fn routes_domains_through_maps_to_ready_servers() {
        let web = service("shop", "web", "http")
            .domain("shop.example.com")
            .domain("*.shop.example.com")
            .endpoint("10.0.0.1", 8080, true)
            .endpoint("10.0.0.2", 8080, false)
            .build();
        let out = Http::render(cluster([web])).unwrap();

        let hosts = &out.maps[0].entries;
        assert_eq!(
            (hosts[0].key.as_str(), hosts[0].value.as_str()),
            ("shop.example.com", "http_shop_web")
        );
        let wildcards = &out.maps[1].entries;
        assert_eq!(wildcards[0].key, ".shop.example.com");

        let backend = out
            .sections
            .iter()
            .find(|s| s.name.as_deref() == Some("http_shop_web"))
            .unwrap();
        let servers: Vec<_> = backend
            .directives
            .iter()
            .filter(|d| d.keyword == "server")
            .collect();
        assert_eq!(servers.len(), 1, "only the ready endpoint is a server");
        assert_eq!(servers[0].args, ["10.0.0.1:8080", "10.0.0.1:8080", "check"]);
    }

    #[test]
    fn https_services_asking_for_it_are_redirected_from_plain_http() {
        let shop = service("a", "shop", "https")
            .domain("shop.example.com")
            .annotation("wasmconfd.io/ssl-redirect", "true")
            .build();
        let api = service("a", "api", "https")
            .domain("api.example.com")
            .build();
        // As the host hands it over: with the annotations the guest declares reading.
        let out = testing::render::<Http>(cluster([shop, api])).unwrap();
        let redirects: Vec<_> = out.sections[0]
            .directives
            .iter()
            .filter(|d| d.args.first().is_some_and(|a| a == "redirect"))
            .map(|d| d.args.join(" "))
            .collect();
        assert_eq!(
            redirects[0],
            "redirect scheme https code 308 if ! { var(txn.backend) -m found } \
             { req.hdr(host),field(1,:),lower,map_str(maps/http-redirects.map) -m found }"
        );
        let map = out
            .maps
            .iter()
            .find(|m| m.name == "http-redirects.map")
            .unwrap();
        assert_eq!(map.entries.len(), 1, "only the service that asks");
        assert_eq!(map.entries[0].key, "shop.example.com");
        assert_eq!(out.sections.len(), 2, "no backend for https services");

        let plain = Http::render(cluster([service("a", "web", "http")
            .domain("w.example.com")
            .build()]));
        assert_eq!(
            plain.unwrap().maps.len(),
            2,
            "no redirect maps without redirects"
        );
    }

    #[test]
    fn the_most_specific_wildcard_wins() {
        let wide = service("a", "everything", "http")
            .domain("*.example.com")
            .build();
        let narrow = service("b", "shop", "http")
            .domain("*.shop.example.com")
            .build();
        let out = Http::render(cluster([wide, narrow])).unwrap();
        let keys: Vec<_> = out.maps[1].entries.iter().map(|e| &e.key).collect();
        assert_eq!(keys, [".shop.example.com", ".example.com"]);
    }

    #[test]
    fn a_domain_shared_under_paths_goes_to_the_first_service() {
        let first = service("a", "root", "http").domain("x.example.com").build();
        let second = service("a", "api", "http")
            .domain("x.example.com")
            .annotation("wasmconfd.io/path", "/api")
            .build();
        let out = Http::render(cluster([first, second])).unwrap();
        assert_eq!(out.maps[0].entries.len(), 1);
        assert_eq!(out.maps[0].entries[0].value, "http_a_root");
        assert!(take_logs().iter().any(|(_, m)| m.contains("a/api")));
    }

    #[test]
    fn service_without_domain_is_skipped_with_a_warning() {
        let out = Http::render(cluster([service("a", "b", "http").build()])).unwrap();
        assert_eq!(out.sections.len(), 2, "frontend and default backend only");
        assert!(take_logs().iter().any(|(_, m)| m.contains("a/b")));
    }
}
