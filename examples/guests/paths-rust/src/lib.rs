//! Path-based routing for team services, with a maintenance page.
//!
//! A service with proto `paths` and the annotation `paths.wasmconfd.io/team` is routed by host and
//! path prefix: `wasmconfd.io/path` (default `/`; the host checks it, and lets services share a
//! domain under different paths) on each of its domains. The longest matching prefix wins. Its
//! backend tags responses with `X-Team`, and answers 503 with a maintenance page naming the team
//! while no server is up (no ready endpoint, or every health check failing). Requests no
//! service claims get 404.
//!
//! Settings: `bind` (default `:8080`), `frontend` (default `paths`).
//!
//! The same guest is written in Python and JavaScript beside this one; all three render the
//! same configuration.

use wasmconfd_guest::{
    Cluster, Fragment, Guest, MapFile, RenderError, Section, args, backend_name, servers, warn,
};

const TEAM: &str = "paths.wasmconfd.io/team";
const PATH: &str = "wasmconfd.io/path";

struct Paths;

impl Guest for Paths {
    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let name = cluster.setting_or("frontend", "paths");
        let routes_map = cluster.map_path("paths.map");
        let frontend = Section::frontend(name)
            .with("mode", ["http"])
            .with("bind", [cluster.setting_or("bind", ":8080")])
            .with(
                "http-request",
                args!["set-var(txn.route)", format!("base,map_beg({routes_map})")],
            )
            .with(
                "use_backend",
                [
                    "%[var(txn.route)]",
                    "if",
                    "{",
                    "var(txn.route)",
                    "-m",
                    "found",
                    "}",
                ],
            )
            .with("default_backend", [format!("{name}_default")]);
        let not_found = Section::backend(format!("{name}_default"))
            .with("mode", ["http"])
            .with(
                "http-request",
                [
                    "return",
                    "status",
                    "404",
                    "content-type",
                    "text/plain",
                    "string",
                    "no route for this path",
                ],
            );

        let mut routes = MapFile::new("paths.map");
        let mut sections = vec![frontend, not_found];
        for service in cluster.services_with_proto("paths") {
            let Some(team) = service.annotation(TEAM).filter(|t| !t.is_empty()) else {
                warn!("service {} has no {TEAM} annotation: skipped", service.id());
                continue;
            };
            let prefix = service.annotation(PATH).unwrap_or("/");
            let backend = backend_name("paths", service);
            for domain in &service.domains {
                if domain.starts_with('*') {
                    warn!(
                        "service {}: wildcard domain {domain} cannot be matched by path: skipped",
                        service.id()
                    );
                    continue;
                }
                routes.push(format!("{domain}{prefix}"), &backend);
            }
            let page = format!(
                "<html><body><h1>Down for maintenance</h1><p>Team {team} is on it.</p></body></html>"
            );
            #[rustfmt::skip]
            let maintenance = args![
                "return", "status", "503", "content-type", "text/html", "string", page,
                "if", "{", "nbsrv", "eq", "0", "}",
            ];
            let mut section = Section::backend(backend)
                .with("mode", ["http"])
                .with("http-response", ["set-header", "X-Team", team])
                .with("http-request", maintenance);
            section.extend(servers(service));
            sections.push(section);
        }
        // `map_beg` takes the first prefix that matches: longest first.
        routes.sort_longest_first();
        Ok(Fragment {
            sections,
            maps: vec![routes],
        })
    }
}

wasmconfd_guest::export!(Paths);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmconfd_guest::testing::{cluster, service, take_logs};

    #[test]
    fn routes_prefixes_longest_first_with_a_maintenance_page() {
        let api = service("tools", "api", "paths")
            .domain("tools.example.com")
            .annotation(TEAM, "platform")
            .annotation(PATH, "/api")
            .endpoint("10.0.0.1", 8080, true)
            .build();
        let v2 = service("tools", "api-v2", "paths")
            .domain("tools.example.com")
            .annotation(TEAM, "platform")
            .annotation(PATH, "/api/v2")
            .build();
        let out = Paths::render(cluster([api, v2])).unwrap();
        let keys: Vec<_> = out.maps[0].entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["tools.example.com/api/v2", "tools.example.com/api"]);
        let v2 = &out.sections[3];
        assert_eq!(v2.name.as_deref(), Some("paths_tools_api-v2"));
        assert!(v2.directives.iter().all(|d| d.keyword != "server"));
        assert!(
            v2.directives[2]
                .args
                .iter()
                .any(|a| a.contains("Team platform"))
        );
    }

    #[test]
    fn services_without_a_team_are_skipped() {
        let anonymous = service("a", "anonymous", "paths").domain("a.test").build();
        let out = Paths::render(cluster([anonymous])).unwrap();
        assert_eq!(out.sections.len(), 2);
        assert!(take_logs().iter().any(|(_, m)| m.contains("a/anonymous")));
    }
}
