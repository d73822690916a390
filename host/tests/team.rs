//! Team guests (`--guests-config`): each sees only its scope, its output is held to the team
//! policy, and a guest that fails on one service renders the rest. Configurations are rendered
//! by `wasmconfd render`, checked and served by the real HAProxy, with traffic to backends on
//! loopback. The team guest is the misbehaving test guest in its `route` mode.

mod common;

use common::{
    Killed, backend, first_line as get, free_port, haproxy_check, misbehave_guest, run, wasmconfd,
};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A Service of `proto` in `namespace` on `domain`, served by 127.0.0.1:`port`, with extra
/// annotations (`key: value, ...`).
fn service(
    namespace: &str,
    name: &str,
    proto: &str,
    domain: &str,
    port: u16,
    extra: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}, \
         annotations: {{wasmconfd.io/domain: {domain}, wasmconfd.io/proto: {proto}{extra}}}}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
         metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         ports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
    )
}

/// A directory with the cluster, the guests and the guests configuration, and the ports.
struct Setup {
    dir: tempfile::TempDir,
    http: u16,
}

impl Setup {
    /// `cluster` (YAML documents), the misbehaving guest in each of `slots`, and `config` as
    /// the guests configuration.
    fn new(cluster: &str, slots: &[&str], config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.yaml"), cluster).unwrap();
        std::fs::write(dir.path().join("guests.yaml"), config).unwrap();
        let guests = dir.path().join("guests");
        std::fs::create_dir(&guests).unwrap();
        for slot in slots {
            std::fs::write(guests.join(format!("{slot}.wasm")), misbehave_guest()).unwrap();
        }
        Setup {
            dir,
            http: free_port(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `wasmconfd render --check` into `name`, with `extra` arguments: (success, stderr).
    fn render(&self, name: &str, extra: &[&str]) -> (bool, String) {
        let (ok, _, stderr) = run(wasmconfd()
            .args([
                "render",
                "--check",
                "--allow-loopback-endpoints",
                "--cluster",
            ])
            .arg(self.path("cluster.yaml"))
            .arg("--guests")
            .arg(self.path("guests"))
            .arg("--guests-config")
            .arg(self.path("guests.yaml"))
            .arg("--output")
            .arg(self.path(name))
            .args(["--set", &format!("http.bind=127.0.0.1:{}", self.http)])
            .args(["--set", &format!("https.bind=127.0.0.1:{}", free_port())])
            .args(["--set", "base.log=none", "--set", "base.admin-socket=none"])
            .args(extra));
        (ok, stderr)
    }

    fn config(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// HAProxy on the configuration `name`, once it listens on `port`.
    fn serve(&self, name: &str, port: u16) -> Killed {
        common::serve_haproxy(&self.path(name), port)
    }
}

/// team-a's scope: namespace team-a, port `port`, routing mode.
fn team_a(port: u16) -> String {
    format!(
        "guests:\n  team-a:\n    trust: team\n    namespaces: [team-a]\n    listen-ports: [{port}]\n    \
         settings: {{mode: route, name: team-a, bind: \"127.0.0.1:{port}\"}}\n"
    )
}

#[test]
fn each_forbidden_output_of_a_team_guest_is_refused_and_the_bundled_guests_keep_serving() {
    let (shop, web) = (backend("shop"), backend("web"));
    let team_port = free_port();
    let cluster = service("t", "shop", "http", "shop.test", shop, "")
        + &service("team-a", "web", "web", "web.team-a.test", web, "");
    let setup = Setup::new(&cluster, &["50-team-a"], &team_a(team_port));

    // Keeping to its scope, the team guest routes its service on its port.
    let (ok, stderr) = setup.render("good.cfg", &[]);
    assert!(ok, "{stderr}");
    {
        let _haproxy = setup.serve("good.cfg", team_port);
        assert_eq!(get(team_port, "web.team-a.test"), "web");
        assert_eq!(get(setup.http, "shop.test"), "shop");
    }

    let violations = [
        (
            "global",
            "only backend, frontend and listen sections, not global",
        ),
        ("lua", "not global"),
        (
            "external-check",
            "`option external-check` is not on the team allow list",
        ),
        ("defaults", "not defaults"),
        ("peers", "not peers"),
        ("ring", "not ring"),
        ("mailers", "not mailers"),
        ("userlist", "not userlist"),
        ("dot-if", "keywords starting with `.`"),
        ("setenv", "`setenv` is not on the team allow list"),
        ("stats-socket", "`stats` is not on the team allow list"),
        ("chroot", "`chroot` is not on the team allow list"),
        ("foreign-name", "section names start with its name"),
        (
            "foreign-map",
            "reads maps/hosts.map, which is not one of its own map files",
        ),
        (
            "foreign-map-file",
            "map file hosts.map: a team guest's map files are named",
        ),
        ("file", "reads a file"),
        ("env", "Lua and the environment are not for team guests"),
        (
            "server",
            "server address 169.254.169.254:80 is not an endpoint of its services",
        ),
    ];
    for (violation, rule) in violations {
        let name = format!("{violation}.cfg");
        let (ok, stderr) = setup.render(&name, &["--set", &format!("team-a.violate={violation}")]);
        assert!(
            ok,
            "{violation}: the render must go on without the team guest:\n{stderr}"
        );
        assert!(
            stderr.contains("guest team-a's output was refused") && stderr.contains(rule),
            "{violation}: the error must name the guest and the rule {rule:?}:\n{stderr}"
        );
        let config = setup.config(&name);
        let written = config
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("team-a"));
        assert!(!written, "{violation}: its output is left out:\n{config}");
    }

    // What the bundled guests render serves traffic while the team guest is refused.
    let _haproxy = setup.serve("global.cfg", setup.http);
    assert_eq!(get(setup.http, "shop.test"), "shop");
    assert!(TcpStream::connect(("127.0.0.1", team_port)).is_err());
}

/// Lua a guest loads runs in `haproxy -c` already, and a `program` runs as HAProxy's master
/// does: from a platform guest the Lua marker appears (so this test can fail), from a team
/// guest neither ever does, in the check or in a running HAProxy.
#[test]
fn nothing_a_team_guest_returns_runs_a_program_or_loads_lua() {
    let web = backend("web");
    let team_port = free_port();
    let cluster = service("team-a", "web", "web", "web.team-a.test", web, "");
    let setup = Setup::new(&cluster, &["50-team-a"], &team_a(team_port));
    let marker = setup.path("marker");
    let ran = |suffix: &str| Path::new(&format!("{}{suffix}", marker.display())).exists();
    std::fs::write(
        setup.path("marker.lua"),
        format!(
            "local f = io.open(\"{}-lua\", \"w\")\nf:write(\"ran\")\nf:close()\n",
            marker.display()
        ),
    )
    .unwrap();
    let marker_setting = format!("team-a.marker={}", marker.display());

    let platform = Setup::new(
        &cluster,
        &["50-team-a"],
        "guests:\n  team-a:\n    settings: {mode: route, name: team-a, bind: \"127.0.0.1:1\"}\n",
    );
    let (_, stderr) = platform.render(
        "lua.cfg",
        &["--set", "team-a.violate=lua", "--set", &marker_setting],
    );
    assert!(
        ran("-lua"),
        "a platform guest's lua-load should have run in the check:\n{stderr}"
    );
    std::fs::remove_file(format!("{}-lua", marker.display())).unwrap();

    for violation in ["lua", "global", "external-check"] {
        let name = format!("{violation}.cfg");
        let violate = format!("team-a.violate={violation}");
        let (ok, stderr) = setup.render(&name, &["--set", &violate, "--set", &marker_setting]);
        assert!(ok && stderr.contains("output was refused"), "{stderr}");
        let (checked, output) = haproxy_check(&setup.path(&name));
        assert!(checked, "{output}");
        let _haproxy = setup.serve(&name, setup.http);
        std::thread::sleep(Duration::from_millis(500));
        assert!(!ran("") && !ran("-lua"), "{violation}: something ran");
    }
}

#[test]
fn two_team_guests_each_get_only_their_namespace_and_cannot_take_the_others_domain_or_port() {
    let (web, api) = (backend("web"), backend("api"));
    let (port_a, port_b) = (free_port(), free_port());
    let cluster = service("team-a", "web", "web", "web.a.test", web, "")
        + &service("team-b", "api", "web", "api.b.test", api, "");
    let config = format!(
        "guests:\n  \
         team-a:\n    trust: team\n    namespaces: [team-a]\n    listen-ports: [{port_a}]\n    \
         settings: {{mode: route, name: team-a, bind: \"127.0.0.1:{port_a}\"}}\n  \
         team-b:\n    trust: team\n    namespaces: [\"team-b*\"]\n    listen-ports: [{port_b}]\n    \
         settings: {{mode: route, name: team-b, bind: \"127.0.0.1:{port_b}\"}}\n"
    );
    let setup = Setup::new(&cluster, &["50-team-a", "60-team-b"], &config);
    let (ok, stderr) = setup.render("haproxy.cfg", &[]);
    assert!(ok, "{stderr}");

    // What each guest received, as it wrote it: a backend per service.
    let text = setup.config("haproxy.cfg");
    assert!(text.contains("backend team-a_team-a_web"), "{text}");
    assert!(text.contains("backend team-b_team-b_api"), "{text}");
    assert!(
        !text.contains("team-a_team-b") && !text.contains("team-b_team-a"),
        "{text}"
    );
    {
        let _haproxy = setup.serve("haproxy.cfg", port_b);
        assert_eq!(get(port_a, "web.a.test"), "web");
        assert_eq!(get(port_b, "api.b.test"), "api");
        assert_ne!(get(port_a, "api.b.test"), "api");
    }

    // team-a reaching for team-b's domain or port is refused, and team-b is untouched.
    for (setting, rule) in [
        (
            "team-a.extra-domain=api.b.test".to_string(),
            "routes api.b.test, which is not a domain of its services".to_string(),
        ),
        (
            format!("team-a.bind=127.0.0.1:{port_b}"),
            format!("binds 127.0.0.1:{port_b}, which is not on a port its scope grants"),
        ),
    ] {
        let (ok, stderr) = setup.render("taken.cfg", &["--set", &setting]);
        assert!(
            ok && stderr.contains("guest team-a's output was refused") && stderr.contains(&rule),
            "{setting}: {stderr}"
        );
        let text = setup.config("taken.cfg");
        assert!(
            !text.contains("frontend team-a") && text.contains("frontend team-b"),
            "{text}"
        );
    }
}

#[test]
fn a_guest_failing_on_one_service_routes_all_the_others_and_names_it() {
    let (web, shop) = (backend("web"), backend("shop"));
    let team_port = free_port();
    let panic = ", misbehave.wasmconfd.io/do: panic";
    let newline = ", misbehave.wasmconfd.io/do: newline";
    let cluster = service("team-a", "web", "web", "web.team-a.test", web, "")
        + &service("team-a", "shop", "web", "shop.team-a.test", shop, "")
        + &service("team-a", "crash", "web", "crash.team-a.test", web, panic)
        + &service("team-a", "odd", "web", "odd.team-a.test", web, newline);
    let setup = Setup::new(&cluster, &["50-team-a"], &team_a(team_port));
    let (ok, stderr) = setup.render("haproxy.cfg", &[]);
    assert!(ok, "{stderr}");
    for (object, why) in [
        ("team-a/crash", "misbehave was told to panic"),
        ("team-a/odd", "control character"),
    ] {
        let named = stderr
            .lines()
            .any(|l| l.contains("quarantined") && l.contains(object) && l.contains(why));
        assert!(named, "{object} must be named with why:\n{stderr}");
    }
    let text = setup.config("haproxy.cfg");
    assert!(
        !text.contains("team-a_team-a_crash") && !text.contains("team-a_team-a_odd"),
        "{text}"
    );
    let _haproxy = setup.serve("haproxy.cfg", team_port);
    assert_eq!(get(team_port, "web.team-a.test"), "web");
    assert_eq!(get(team_port, "shop.team-a.test"), "shop");
}

/// A team guest does not receive a domain an earlier guest routes: a team's http service, seen by
/// both the bundled http guest (slot 20) and the team guest, goes to the team guest without it,
/// with a warning naming both; scoping the http guest away from the team's namespace gives the
/// domain to the team.
#[test]
fn a_domain_an_earlier_guest_routes_is_not_handed_to_a_team_guest() {
    let web = backend("web");
    let team_port = free_port();
    let cluster = service("team-a", "web", "http", "web.team-a.test", web, "");
    let setup = Setup::new(&cluster, &["50-team-a"], &team_a(team_port));
    let (ok, stderr) = setup.render("shared.cfg", &[]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(
            "guest 50-team-a: domain web.team-a.test of service team-a/web left out: guest \
             20-http routes it"
        ),
        "{stderr}"
    );
    let text = setup.config("shared.cfg");
    assert!(!text.contains("backend team-a_team-a_web"), "{text}");

    let scoped = team_a(team_port) + "  http:\n    namespaces: [\"default\", \"shop-*\"]\n";
    std::fs::write(setup.path("guests.yaml"), scoped).unwrap();
    let (ok, stderr) = setup.render("scoped.cfg", &[]);
    assert!(ok && !stderr.contains("left out"), "{stderr}");
    let _haproxy = setup.serve("scoped.cfg", team_port);
    assert_eq!(get(team_port, "web.team-a.test"), "web");
}

/// Finding a service that makes a guest run out of time costs time limits, so the search stops
/// after two of them: the guest is left out (in `run`, it would keep its last good output)
/// instead of holding up the render for sixty-four.
#[test]
fn a_service_that_makes_a_guest_loop_costs_at_most_a_few_time_limits() {
    let web = backend("web");
    let team_port = free_port();
    let looping = ", misbehave.wasmconfd.io/do: loop";
    let cluster = (0..8)
        .map(|i| {
            service(
                "team-a",
                &format!("s{i}"),
                "web",
                &format!("s{i}.team-a.test"),
                web,
                "",
            )
        })
        .collect::<String>()
        + &service("team-a", "spin", "web", "spin.team-a.test", web, looping);
    let setup = Setup::new(&cluster, &["50-team-a"], &team_a(team_port));
    let started = Instant::now();
    let (ok, stderr) = setup.render("haproxy.cfg", &["--guest-timeout", "300ms"]);
    let took = started.elapsed();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("ran longer than its time limit")
            && stderr.contains("team guest is left out"),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}: 64 time limits would be 19 s"
    );
}
