//! A guest that writes its `server` lines apart (the `servers` export), to test how the host
//! takes them: one backend `apart_NAMESPACE_NAME` per http service, and each service's servers
//! placed into its own. A service annotated `apart.wasmconfd.io/servers` gets instead:
//!
//! - `newline`: a `server` line whose argument holds a newline and a `frontend`;
//! - `bind`: a `bind` line among its servers;
//! - `elsewhere`: servers for a section its render does not have;
//! - `panic`: the guest panics in `servers`.

use wasmconfd_guest::{
    Cluster, Context, Description, Directive, Fragment, Guest, Placement, RenderError, Section,
    Service, placement,
};

struct Apart;

fn backend(service: &Service) -> String {
    format!("apart_{}_{}", service.namespace, service.name)
}

impl Guest for Apart {
    fn describe() -> Description {
        Description::new(["http"], []).with_servers_apart()
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let sections = (cluster.services.iter())
            .map(|service| Section::backend(backend(service)).with("mode", ["http"]))
            .collect();
        Ok(Fragment {
            sections,
            maps: Vec::new(),
        })
    }

    fn servers(_: Context, services: Vec<Service>) -> Result<Vec<Vec<Placement>>, RenderError> {
        let placed = |service: &Service| {
            let section = backend(service);
            let line = |keyword: &str, args: &[&str]| Placement {
                section: section.clone(),
                servers: vec![Directive::new(keyword, args.iter().copied())],
            };
            match service.annotation("apart.wasmconfd.io/servers") {
                Some("newline") => vec![line("server", &["evil", "127.0.0.1:1\nfrontend evil"])],
                Some("bind") => vec![line("bind", &[":1"])],
                Some("elsewhere") => vec![Placement {
                    section: "nowhere".into(),
                    ..placement(&section, service)
                }],
                Some("panic") => panic!("apart was told to panic in servers"),
                _ => vec![placement(section, service)],
            }
        };
        Ok(services.iter().map(placed).collect())
    }
}

wasmconfd_guest::export!(Apart);
