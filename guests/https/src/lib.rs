//! The bundled `https` guest: HTTPS on one port, each service either passed through or
//! terminated.
//!
//! A service of proto `https` that names a TLS Secret (`wasmconfd.io/tls-secret`) has its TLS
//! terminated here: the certificate is chosen by the server name (SNI) from the host's crt-list,
//! and requests are routed by Host, like the http guest does, to its endpoints in plain HTTP,
//! with `X-Forwarded-Proto: https`. Any other `https` service gets its connections passed
//! through as they are, by server name, to endpoints that terminate TLS themselves.
//!
//! The frontend on `bind` reads the TLS ClientHello (never decrypting it) and looks the server
//! name up in map files (`https-sni.map` for exact names, `https-wildcards.map` for
//! `*.example.com` as a suffix). A passed-through name goes to its service; every other
//! connection, when some service is terminated, goes over an internal socket (`abns@`, with the
//! PROXY protocol so the client's address is kept) to the terminating frontend, which answers
//! names without a certificate with the default one, and unknown hosts with a 404. Without
//! terminated services, unknown names are closed.
//!
//! Settings: `bind` (default `:443`), `frontend` (default `https`), `inspect-delay` (default
//! `5s`), `hsts` (a `Strict-Transport-Security` value for terminated services, such as
//! `max-age=31536000`; default none), `alpn` (default `h2,http/1.1`), `tls-socket` (the
//! internal socket's name, default `wasmconfd-https-tls`).

use wasmconfd_guest::{
    Cluster, Context, Description, DomainRoutes, Fragment, Guest, Placement, RenderError, Section,
    Service, backend_name, log, not_found_backend, servers, servers_by_domain,
};

struct Https;

/// The annotation that asks for termination.
const TLS_SECRET: &str = "wasmconfd.io/tls-secret";
const HOP_BACKEND: &str = "https_terminate";
const TLS_DEFAULT_BACKEND: &str = "https_tls_default";

impl Guest for Https {
    fn describe() -> Description {
        Description::new(
            ["https"],
            [
                (
                    "alpn",
                    "protocols offered on terminated TLS (default h2,http/1.1)",
                ),
                ("bind", "the frontend's bind address (default :443)"),
                ("frontend", "the frontend's name (default https)"),
                (
                    "hsts",
                    "Strict-Transport-Security value for terminated services, e.g. \
                     max-age=31536000 (default: none sent)",
                ),
                (
                    "inspect-delay",
                    "how long to wait for the TLS ClientHello (default 5s)",
                ),
                (
                    "tls-socket",
                    "name of the internal socket to the terminating frontend (default \
                     wasmconfd-https-tls)",
                ),
            ],
        )
        .reading([TLS_SECRET], [])
        .without_endpoint_details()
        .without_ports()
        .with_servers_apart()
    }

    /// Each https service's servers, into its backend (a service without a domain has none).
    fn servers(_: Context, services: Vec<Service>) -> Result<Vec<Vec<Placement>>, RenderError> {
        Ok(servers_by_domain("https", &services))
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let mut passthrough =
            DomainRoutes::new("https-sni.map", "https-wildcards.map", "server name");
        let mut hosts = DomainRoutes::new("https-hosts.map", "https-host-wildcards.map", "host");
        let mut backends = Vec::new();
        let mut terminated = 0;
        for service in cluster.services_with_proto("https") {
            if service.domains.is_empty() {
                log::warn(&format!(
                    "service {} has proto https but no domain: skipped",
                    service.id()
                ));
                continue;
            }
            let backend = backend_name("https", service);
            let mode = if service.annotation(TLS_SECRET).is_some() {
                // Without a good certificate (the host says why), its names get the default one.
                terminated += 1;
                hosts.add(service, &backend);
                "http"
            } else {
                passthrough.add(service, &backend);
                "tcp"
            };
            let mut section = Section::backend(backend).with("mode", [mode]);
            section.extend(servers(service));
            backends.push(section);
        }
        let socket = format!(
            "abns@{}",
            cluster.setting_or("tls-socket", "wasmconfd-https-tls")
        );
        let mut sections = vec![sni_frontend(&cluster, terminated > 0)];
        if terminated > 0 {
            sections.push(
                Section::backend(HOP_BACKEND)
                    .with("mode", ["tcp"])
                    .with("server", ["tls", socket.as_str(), "send-proxy-v2"]),
            );
            sections.extend(terminating_frontend(&cluster, &socket));
        }
        sections.extend(backends);
        let mut maps = passthrough.into_maps();
        if terminated > 0 {
            maps.extend(hosts.into_maps());
        }
        Ok(Fragment { sections, maps })
    }
}

/// The frontend on `bind`: passed-through names to their backends; the rest to the
/// terminating frontend when `terminating`, else closed.
fn sni_frontend(cluster: &Cluster, terminating: bool) -> Section {
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
    let mut frontend = Section::frontend(cluster.setting_or("frontend", "https"))
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
    if terminating {
        frontend.push("default_backend", [HOP_BACKEND]);
    }
    frontend
}

/// The frontend that terminates TLS on `socket` and routes by Host, and its 404 backend.
fn terminating_frontend(cluster: &Cluster, socket: &str) -> [Section; 2] {
    let host = "req.hdr(host),field(1,:),lower";
    let found = ["{", "var(txn.backend)", "-m", "found", "}"].map(String::from);
    let tls = &cluster.tls;
    let mut frontend =
        Section::frontend(format!("{}_tls", cluster.setting_or("frontend", "https")))
            .with("mode", ["http"])
            .with(
                "bind",
                [
                    socket,
                    "accept-proxy",
                    "ssl",
                    "crt",
                    &tls.default_certificate,
                    "crt-list",
                    &tls.crt_list,
                    "alpn",
                    cluster.setting_or("alpn", "h2,http/1.1"),
                ],
            )
            .with("option", ["httplog"])
            .with("option", ["forwardfor"])
            .with("http-request", ["set-header", "X-Forwarded-Proto", "https"])
            .with(
                "http-request",
                [
                    "set-var(txn.backend)".to_string(),
                    format!("{host},map_str({})", cluster.map_path("https-hosts.map")),
                ],
            )
            .with(
                "http-request",
                [
                    "set-var(txn.backend)".to_string(),
                    format!(
                        "{host},map_end({})",
                        cluster.map_path("https-host-wildcards.map")
                    ),
                    "unless".to_string(),
                ]
                .into_iter()
                .chain(found.iter().cloned()),
            )
            .with(
                "use_backend",
                ["%[var(txn.backend)]".to_string(), "if".to_string()]
                    .into_iter()
                    .chain(found.iter().cloned()),
            )
            .with("default_backend", [TLS_DEFAULT_BACKEND]);
    if let Some(hsts) = cluster.setting("hsts") {
        frontend.push(
            "http-response",
            ["set-header", "Strict-Transport-Security", hsts],
        );
    }
    let default_backend = not_found_backend(TLS_DEFAULT_BACKEND, "no service for this host");
    [frontend, default_backend]
}

wasmconfd_guest::export!(Https);

// Each call runs in a fresh instance: see `OneCallAllocator`.
#[global_allocator]
static ALLOCATOR: wasmconfd_guest::OneCallAllocator = wasmconfd_guest::OneCallAllocator::new();

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{self, cluster, service, with_certificate, with_setting};

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
    fn a_service_naming_a_tls_secret_is_terminated_and_routed_by_host() {
        let shop = service("prod", "shop", "https")
            .domain("shop.example.com")
            .annotation("wasmconfd.io/tls-secret", "shop-tls")
            .endpoint("10.0.1.6", 8080, true)
            .build();
        let api = service("prod", "api", "https")
            .domain("api.example.com")
            .endpoint("10.0.1.5", 8443, true)
            .build();
        let input = with_setting(
            with_certificate(cluster([api, shop.clone()]), &shop, "shop-tls"),
            "hsts",
            "max-age=600",
        );
        // As the host hands it over: with the annotations the guest declares reading.
        let out = testing::render::<Https>(input).unwrap();
        let section = |name: &str| {
            out.sections
                .iter()
                .find(|s| s.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no section {name}"))
        };
        let line = |section: &Section, keyword: &str| {
            section
                .directives
                .iter()
                .filter(|d| d.keyword == keyword)
                .map(|d| d.args.join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            line(section("https"), "default_backend"),
            ["https_terminate"],
            "names not passed through go to the terminating frontend"
        );
        assert_eq!(
            line(section("https_tls"), "bind"),
            [
                "abns@wasmconfd-https-tls accept-proxy ssl crt certs/default.pem crt-list \
              certs/certificates.crtlist alpn h2,http/1.1"
            ]
        );
        assert!(
            line(section("https_tls"), "http-response")
                .contains(&"set-header Strict-Transport-Security max-age=600".to_string())
        );
        assert_eq!(line(section("https_prod_shop"), "mode"), ["http"]);
        assert_eq!(line(section("https_prod_api"), "mode"), ["tcp"]);
        let map = |name: &str| {
            let map = out.maps.iter().find(|m| m.name == name).unwrap();
            map.entries
                .iter()
                .map(|e| format!("{} {}", e.key, e.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(map("https-sni.map"), ["api.example.com https_prod_api"]);
        assert_eq!(map("https-hosts.map"), ["shop.example.com https_prod_shop"]);
    }

    #[test]
    fn without_terminated_services_unknown_names_are_closed_as_before() {
        let api = service("prod", "api", "https")
            .domain("api.example.com")
            .build();
        let out = Https::render(cluster([api])).unwrap();
        assert_eq!(
            out.sections.len(),
            2,
            "the frontend and the service's backend"
        );
        assert!(
            out.sections[0]
                .directives
                .iter()
                .all(|d| d.keyword != "default_backend")
        );
    }

    #[test]
    fn other_protos_are_ignored() {
        let web = service("prod", "web", "http")
            .domain("web.example.com")
            .build();
        assert_eq!(Https::render(cluster([web])).unwrap().sections.len(), 1);
    }
}
