//! `wasmconfd run` end to end: the fake API server, the real daemon, the real HAProxy in
//! master-worker mode, and HTTP traffic through it to backends on loopback. Each test asserts
//! what a client sees through HAProxy.

mod common;

use common::{
    Killed, SLOW, backend, backend_on, first_line as get, free_port, http_get, http_get_path,
    misbehave_guest, show_proc, start_haproxy, wasmconfd,
};
use fake_apiserver::{FakeApi, Fault, Kind, TestCa, tls_secret};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn wait_for(port: u16, host: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, host) != body {
        assert!(
            Instant::now() < deadline,
            "{host} still answers {:?}, not {body:?}",
            get(port, host)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn service(name: &str, domain: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "e2e", "creationTimestamp": "2025-01-01T00:00:00Z",
                        "annotations": {"wasmconfd.io/domain": domain, "wasmconfd.io/proto": "http"}},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

/// The EndpointSlice of `service`: every address in `ips` serving `port`.
fn slice(service: &str, ips: &[&str], port: u16) -> Value {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": format!("{service}-1"), "namespace": "e2e",
                        "labels": {"kubernetes.io/service-name": service}},
           "ports": [{"name": "http", "port": port}], "endpoints": endpoints})
}

/// `api` with service `e2e/shop` (`shop.test`) served by `ip:port`.
fn with_shop(api: FakeApi, ip: &str, port: u16) -> FakeApi {
    api.apply(service("shop", "shop.test"));
    api.apply(slice("shop", &[ip], port));
    api
}

/// A Service of proto `web`, which no bundled guest serves: the team guest's.
fn web_service(name: &str, domain: &str) -> Value {
    let mut service = service(name, domain);
    service["metadata"]["annotations"]["wasmconfd.io/proto"] = json!("web");
    service
}

/// A scene whose guests include the misbehaving guest as team guest `team`, in route mode on
/// 127.0.0.1:`port`, with `scope` (its entry's other keys, as YAML lines indented four spaces)
/// in the guests configuration; and the directory of both, to keep while the scene runs.
fn start_with_team_guest(api: &FakeApi, port: u16, scope: &str) -> (Scene, tempfile::TempDir) {
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(guests.path().join("50-team.wasm"), misbehave_guest()).unwrap();
    let config = guests.path().join("guests.yaml");
    std::fs::write(
        &config,
        format!(
            "guests:\n  team:\n    trust: team\n{scope}    listen-ports: [{port}]\n    \
             settings: {{mode: route, name: team, bind: \"127.0.0.1:{port}\"}}\n"
        ),
    )
    .unwrap();
    let scene = Scene::start(
        &api.url(),
        &[
            "--guests",
            guests.path().to_str().unwrap(),
            "--guests-config",
            config.to_str().unwrap(),
        ],
    );
    (scene, guests)
}

/// HAProxy (master-worker, answering 503 `booting` until configured) and `wasmconfd run`.
struct Scene {
    dir: tempfile::TempDir,
    http: u16,
    https: u16,
    /// wasmconfd's `--status-address` port.
    status: u16,
    /// `wasmconfd`'s arguments, to start it again.
    daemon_args: Vec<String>,
    haproxy: Option<Killed>,
    daemon: Option<Killed>,
}

impl Scene {
    fn start(api_servers: &str, extra: &[&str]) -> Scene {
        Self::start_reloading_with(
            api_servers,
            &[
                "--reload-method",
                "master-socket",
                "--master-socket",
                "{dir}/master.sock",
            ],
            extra,
        )
    }

    /// With reload flags of the test's own; `{dir}` in them (and in `extra`) is the scene's
    /// directory, where HAProxy's pid file and master socket are.
    fn start_reloading_with(api_servers: &str, reload: &[&str], extra: &[&str]) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let (http, https, status) = (free_port(), free_port(), free_port());
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             frontend boot\n    bind 127.0.0.1:{http}\n    http-request return status 503 content-type text/plain string booting\n"
        )).unwrap();
        let daemon_args: Vec<String> = ["run", "--haproxy-conf", config.to_str().unwrap()]
            .iter()
            .map(|arg| arg.to_string())
            .chain(
                reload
                    .iter()
                    .map(|arg| arg.replace("{dir}", dir.path().to_str().unwrap())),
            )
            .chain(["--api-servers", api_servers, "--allow-loopback-endpoints"].map(String::from))
            .chain([
                "--set".into(),
                format!("http.bind=127.0.0.1:{http}"),
                "--set".into(),
                format!("https.bind=127.0.0.1:{https}"),
                "--set".into(),
                "base.log=none".into(),
                "--status-address".into(),
                format!("127.0.0.1:{status}"),
                "--set".into(),
                format!(
                    "base.admin-socket={}",
                    dir.path().join("admin.sock").display()
                ),
            ])
            .chain(
                extra
                    .iter()
                    .map(|arg| arg.replace("{dir}", dir.path().to_str().unwrap())),
            )
            .collect();
        let mut scene = Scene {
            dir,
            http,
            https,
            status,
            daemon_args,
            haproxy: None,
            daemon: None,
        };
        scene.start_haproxy();
        wait_for(http, "any", "booting");
        scene.start_daemon();
        scene
    }

    /// Start HAProxy in master-worker mode on the scene's configuration file.
    fn start_haproxy(&mut self) {
        let dir = self.dir.path();
        let [socket, pid, config] =
            ["master.sock", "haproxy.pid", "haproxy.cfg"].map(|f| dir.join(f));
        let args = [
            OsStr::new("-W"),
            OsStr::new("-S"),
            socket.as_os_str(),
            OsStr::new("-p"),
            pid.as_os_str(),
            OsStr::new("-f"),
            config.as_os_str(),
        ];
        self.haproxy = Some(start_haproxy(&args, &dir.join("haproxy.log")));
    }

    fn stop_haproxy(&mut self) {
        self.haproxy = None;
    }

    /// Start `wasmconfd run`, logging to `daemon.log` (replaced).
    fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        self.daemon = Some(Killed(
            wasmconfd()
                .args(&self.daemon_args)
                .stderr(log)
                .spawn()
                .unwrap(),
        ));
    }

    fn stop_daemon(&mut self) {
        self.daemon = None;
    }

    /// (status code, body) of wasmconfd's own `path`: `/metrics`, `/readyz`.
    fn get_status(&self, path: &str) -> (u16, String) {
        http_get_path(self.status, "wasmconfd", path)
    }

    /// Wait until `/readyz` answers `code`; its body.
    fn wait_for_readiness(&self, code: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (now, body) = self.get_status("/readyz");
            if now == code {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz still answers {now} {body:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait up to `within` until `done` says so; the daemon's log if it never does.
    fn wait_until(&self, within: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap()
    }

    fn wait_for(&self, host: &str, body: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(self.http, host) != body {
            assert!(
                Instant::now() < deadline,
                "{host} still answers {:?}, not {body:?}; the daemon said:\n{}",
                get(self.http, host),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `host` answers `body` and nothing else, twenty times in a row.
    fn wait_for_only(&self, host: &str, body: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut in_a_row = 0;
        while in_a_row < 20 {
            if get(self.http, host) == body {
                in_a_row += 1;
            } else {
                in_a_row = 0;
                assert!(
                    Instant::now() < deadline,
                    "{host} does not answer only {body:?}; the daemon said:\n{}",
                    self.log()
                );
            }
        }
    }
}

#[test]
fn traffic_follows_the_cluster_and_survives_the_api_going_away() {
    let (a, b) = (backend("a"), backend("b"));
    let mut api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let scene = Scene::start(&api.url(), &["--api-timeout", "5s"]);

    scene.wait_for("shop.test", "a");
    let lists_after_sync = api.lists();
    assert_eq!(
        lists_after_sync,
        2,
        "one list of services and one of endpointslices:\n{}",
        scene.log()
    );

    // Endpoints move, a service is added: traffic follows.
    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_for("shop.test", "b");
    api.apply(service("blog", "blog.test"));
    api.apply(slice("blog", &["127.0.0.1"], a));
    scene.wait_for("blog.test", "a");
    // A service is deleted: its host is unknown again.
    api.delete(Kind::Service, "e2e", "blog");
    scene.wait_for("blog.test", "no service for this host");

    // No change: no list, nothing written.
    let config = scene.config();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        api.lists(),
        lists_after_sync,
        "no list request without a change:\n{}",
        scene.log()
    );
    assert_eq!(scene.config(), config);

    // The API goes away: HAProxy keeps serving what it had, and readiness says it may be stale.
    assert_eq!(scene.wait_for_readiness(200), "ready\n");
    api.stop();
    for _ in 0..10 {
        assert_eq!(get(scene.http, "shop.test"), "b");
        std::thread::sleep(Duration::from_millis(200));
    }
    let why = scene.wait_for_readiness(503);
    assert!(why.contains("may be stale"), "{why}");
    assert!(
        scene
            .get_status("/metrics")
            .1
            .contains("wasmconfd_api_reachable 0")
    );
    // It comes back, with a change made meanwhile: the daemon catches up.
    api.apply(slice("shop", &["127.0.0.1"], a));
    api.restart();
    scene.wait_for("shop.test", "a");
    scene.wait_for_readiness(200);
    assert!(scene.log().contains("watch failed"), "{}", scene.log());
}

/// A client sending requests for `host` through HAProxy one after another, a few milliseconds
/// apart, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u16, String)>>,
}

impl Load {
    fn start(port: u16, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                answers.push(http_get(port, host));
                std::thread::sleep(Duration::from_millis(5));
            }
            answers
        });
        Load { stop, thread }
    }

    /// Every (status, body) the client got.
    fn stop(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The pids of HAProxy's workers, from the master's `show proc`.
fn workers(scene: &Scene) -> Vec<String> {
    show_proc(&scene.dir.path().join("master.sock")).2
}

#[test]
fn scaling_moving_and_a_new_domain_apply_without_a_reload_or_a_failed_request() {
    let port = free_port();
    // Ten endpoints, and the address they move to. Backends that leave the endpoints keep
    // serving, as a pod does while it terminates.
    let ips: Vec<String> = (11..=21).map(|n| format!("127.0.0.{n}")).collect();
    for ip in &ips {
        backend_on(ip, port, ip.clone());
    }
    let api = with_shop(FakeApi::start(), &ips[0], port);
    let scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "127.0.0.11");
    let (reloads_before, workers_before) = (reloads(&scene), workers(&scene));
    let load = Load::start(scene.http, "shop.test");
    let mut followed = Vec::new();

    // 1 -> 10 endpoints: traffic spreads over all ten.
    let started = Instant::now();
    let ten: Vec<&str> = ips[..10].iter().map(String::as_str).collect();
    api.apply(slice("shop", &ten, port));
    let mut seen = BTreeSet::new();
    while seen.len() < ten.len() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {seen:?} answered:\n{}",
            scene.log()
        );
        seen.insert(get(scene.http, "shop.test"));
    }
    followed.push(("1 -> 10 endpoints", started.elapsed()));
    // Each change is followed by some load on its result.
    let settle = || std::thread::sleep(Duration::from_millis(500));
    settle();

    // 10 -> 1, then the one endpoint moves to a new address.
    for (change, ip) in [("10 -> 1 endpoint", &ips[9]), ("moved", &ips[10])] {
        let started = Instant::now();
        api.apply(slice("shop", &[ip], port));
        scene.wait_for_only("shop.test", ip);
        followed.push((change, started.elapsed()));
        settle();
    }

    // A second domain on the service.
    let started = Instant::now();
    api.apply(service("shop", "shop.test,www.shop.test"));
    scene.wait_for("www.shop.test", "127.0.0.21");
    followed.push(("second domain", started.elapsed()));
    settle();

    let answers = load.stop();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}:\n{}",
        failed.len(),
        answers.len(),
        failed[0],
        scene.log()
    );
    assert!(
        answers.len() > 100,
        "the load sent {} requests",
        answers.len()
    );
    assert_eq!(reloads(&scene), reloads_before, "{}", scene.log());
    assert_eq!(workers(&scene), workers_before, "the worker was replaced");
    let log = scene.log();
    assert_eq!(
        log.matches(r#"class="runtime""#).count(),
        4,
        "one Runtime API apply per change:\n{log}"
    );
    let metrics = scene.get_status("/metrics").1;
    assert!(
        metrics.contains("wasmconfd_applies_total{class=\"runtime\"} 4\n"),
        "{metrics}"
    );
    for (change, took) in &followed {
        eprintln!("traffic followed {change} after {} ms", took.as_millis());
    }

    // Anything else, here a new backend, reloads and says why.
    api.apply(service("blog", "blog.test"));
    api.apply(slice("blog", &[&ips[0]], port));
    scene.wait_for("blog.test", "127.0.0.11");
    assert_eq!(reloads(&scene), reloads_before + 1);
    let metrics = scene.get_status("/metrics").1;
    assert!(
        metrics.contains("wasmconfd_applies_total{class=\"reload\"} 2\n"),
        "the first configuration and this one:\n{metrics}"
    );
    assert!(
        scene
            .log()
            .contains("sections added `backend http_e2e_blog`"),
        "{}",
        scene.log()
    );
}

/// A server that leaves the endpoints while a response from it is on its way is disabled, not
/// deleted: new requests go elsewhere at once, the response arrives whole, and the server is
/// deleted when its connection ends. No reload at any point.
#[test]
fn a_busy_server_drains_before_it_is_deleted_without_a_reload() {
    let port = free_port();
    for name in ["127.0.0.31", "127.0.0.32"] {
        backend_on(name, port, name.to_string());
    }
    let api = with_shop(FakeApi::start(), "127.0.0.31", port);
    let scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "127.0.0.31");
    let (reloads_before, workers_before) = (reloads(&scene), workers(&scene));
    let http = scene.http;
    let slow = std::thread::spawn(move || http_get_path(http, "shop.test", "/slow"));
    std::thread::sleep(Duration::from_millis(500));

    let moved = Instant::now();
    api.apply(slice("shop", &["127.0.0.32"], port));
    scene.wait_for_only("shop.test", "127.0.0.32");
    assert!(
        moved.elapsed() < SLOW,
        "new requests waited for the old connection"
    );
    let draining = |n: u32| format!("\nwasmconfd_draining_servers {n}\n");
    let held = || {
        let socket = scene.dir.path().join("admin.sock");
        let servers = wasmconfd::apply::runtime_api::servers(&socket).unwrap();
        servers["http_e2e_shop"].keys().cloned().collect::<Vec<_>>()
    };
    let (old, new) = (format!("127.0.0.31:{port}"), format!("127.0.0.32:{port}"));
    // Past a check or two, while the slow response is still on its way.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(scene.get_status("/metrics").1.contains(&draining(1)));
    assert_eq!(held(), [old, new.clone()]);
    assert!(
        scene
            .log()
            .contains("disabled, deleted once their connections end"),
        "{}",
        scene.log()
    );

    let (status, body) = slow.join().unwrap();
    assert_eq!((status, body.lines().next()), (200, Some("127.0.0.31")));
    scene.wait_until(Duration::from_secs(10), || {
        scene.log().contains("drained server deleted")
    });
    assert!(scene.get_status("/metrics").1.contains(&draining(0)));
    assert_eq!(held(), [new]);
    assert_eq!(
        (reloads(&scene), workers(&scene)),
        (reloads_before, workers_before)
    );
}

#[test]
fn a_broken_guest_keeps_its_last_good_output_and_a_rejected_configuration_is_retried() {
    let (a, b) = (backend("a"), backend("b"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(guests.path().join("50-misbehave.wasm"), misbehave_guest()).unwrap();
    let guests_dir = guests.path().to_str().unwrap().to_string();
    let scene = Scene::start(&api.url(), &["--guests", &guests_dir]);
    scene.wait_for("shop.test", "a");

    // The misbehaving guest crashes on a new service: it renders without it (quarantined),
    // the http guest goes on, and the new service is routed by the http guest.
    let mut blog = service("blog", "blog.test");
    blog["metadata"]["annotations"]["misbehave.wasmconfd.io/do"] = json!("panic");
    api.apply(blog.clone());
    api.apply(slice("blog", &["127.0.0.1"], b));
    scene.wait_for("blog.test", "b");
    scene.wait_until(Duration::from_secs(20), || {
        scene
            .log()
            .contains("quarantined: the guest renders without it: guest misbehave crashed")
    });

    // Now it returns a line HAProxy rejects: nothing is installed, HAProxy serves on.
    blog["metadata"]["annotations"]["misbehave.wasmconfd.io/do"] = json!("invalid");
    api.apply(blog.clone());
    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_until(Duration::from_secs(20), || {
        scene.log().contains("HAProxy rejected the configuration")
    });
    assert!(
        scene.log().contains("written by guest 50-misbehave"),
        "{}",
        scene.log()
    );
    assert_eq!(
        get(scene.http, "shop.test"),
        "a",
        "the rejected configuration must not take effect"
    );

    // Fixed: the next change installs everything.
    blog["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("misbehave.wasmconfd.io/do");
    api.apply(blog);
    scene.wait_for("shop.test", "b");
}

/// With --allow-missing-guests, a registry guest that cannot be loaded at start (registry down,
/// nothing cached) is left out: the rest serves, and the metrics count what is missing. Once
/// the registry is back the guest loads and its output joins the configuration, without a
/// restart.
#[test]
fn a_missing_registry_guest_is_left_out_when_allowed_and_loads_once_the_registry_is_back() {
    let mut registry = test_registry::Registry::start();
    let guest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(guest.path(), misbehave_guest()).unwrap();
    let reference = format!("oci://{}/team/misbehave:v1", registry.host());
    let credentials = [
        "--registry-user",
        test_registry::USER,
        "--registry-password",
        test_registry::PASSWORD,
    ];
    let ca = registry.ca();
    let ca = ca.to_str().unwrap();
    let (ok, _, stderr) = common::run(
        wasmconfd()
            .args(["guest", "push", guest.path().to_str().unwrap(), &reference])
            .args(["--registry-ca", ca])
            .args(credentials),
    );
    assert!(ok, "{stderr}");
    registry.stop();

    let a = backend("a");
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let cache = tempfile::tempdir().unwrap();
    let scene = Scene::start(
        &api.url(),
        &[
            &["--guest", &format!("50-misbehave={reference}")],
            &["--set", "misbehave.mode=ok"][..],
            &["--insecure-allow-unsigned", "--allow-missing-guests"],
            &["--cache-dir", cache.path().to_str().unwrap()],
            &["--registry-ca", ca],
            &credentials,
        ]
        .concat(),
    );
    scene.wait_for("shop.test", "a");
    assert!(
        scene.log().contains("left out (--allow-missing-guests)"),
        "{}",
        scene.log()
    );
    assert!(!scene.config().contains("backend misbehave"));
    let missing = |n: u32| format!("\nwasmconfd_guests_missing {n}\n");
    assert!(scene.get_status("/metrics").1.contains(&missing(1)));

    registry.resume();
    scene.wait_until(Duration::from_secs(60), || {
        scene.config().contains("backend misbehave")
    });
    assert!(
        scene.log().contains("guests left out at start loaded"),
        "{}",
        scene.log()
    );
    assert!(scene.get_status("/metrics").1.contains(&missing(0)));
    scene.wait_for("shop.test", "a");
}

#[test]
fn a_watch_resumed_after_compaction_gets_410_relists_and_catches_up() {
    let (a, b) = (backend("a"), backend("b"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "a");
    let lists = api.lists();

    api.compact();
    api.drop_connections();
    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_for("shop.test", "b");
    // The watch that gets the 410 lists again after a backoff; the change may come first,
    // through the other watch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.lists() == lists {
        assert!(
            Instant::now() < deadline,
            "a 410 must lead to a new list:\n{}",
            scene.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dead_first_api_server_fails_over_to_the_second_within_its_timeout() {
    let a = backend("a");
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let mut dead = FakeApi::start();
    dead.stop();

    let scene = Scene::start(
        &format!("{},{}", dead.url(), api.url()),
        &["--api-timeout", "2s"],
    );
    scene.wait_for("shop.test", "a");
    // From the first attempt on the dead server to a complete list from the second.
    let log = scene.log();
    let at = |message: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("no {message:?} in:\n{log}"));
        let time = line.split_whitespace().next().unwrap();
        let clock = time.rsplit('T').next().unwrap().trim_end_matches('Z');
        clock.split(':').fold(0.0, |total, part| {
            total * 60.0 + part.parse::<f64>().unwrap()
        })
    };
    let synced = at("initial sync done") - at("watching");
    assert!(
        synced < 2.0,
        "synced {synced:.2}s after the first attempt, more than the 2s timeout:\n{log}"
    );
}

#[test]
fn a_silent_api_server_is_left_for_the_next_one_over_https() {
    let a = backend("a");
    let api = with_shop(FakeApi::start_tls(), "127.0.0.1", a);
    let silent = FakeApi::start_tls();
    silent.set_fault(Fault::Hang);
    let files = api.client_files().unwrap();
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    let scene = Scene::start(
        &format!("{},{}", silent.url(), api.url()),
        &[
            "--api-timeout",
            "2s",
            "--ssl-ca",
            &path(&files.ca),
            "--ssl-cert",
            &path(&files.cert),
            "--ssl-key",
            &path(&files.key),
        ],
    );
    scene.wait_for("shop.test", "a");
    assert!(Path::new(&files.ca).exists());
}

/// The master's reload count.
fn reloads(scene: &Scene) -> u64 {
    show_proc(&scene.dir.path().join("master.sock")).0
}

#[test]
fn a_burst_of_changes_is_applied_at_once() {
    let port = free_port();
    let ips: Vec<String> = (31..=40).map(|n| format!("127.0.0.{n}")).collect();
    for ip in &ips {
        backend_on(ip, port, ip.clone());
    }
    let api = with_shop(FakeApi::start(), &ips[0], port);
    let scene = Scene::start(&api.url(), &["--debounce", "300ms", "--max-delay", "3s"]);
    scene.wait_for("shop.test", "127.0.0.31");
    let before = reloads(&scene);

    // Ten changes in quick succession, as a rollout makes them.
    for n in 1..ips.len() {
        let ready: Vec<&str> = ips[..=n].iter().map(String::as_str).collect();
        api.apply(slice("shop", &ready, port));
        std::thread::sleep(Duration::from_millis(20));
    }
    scene.wait_until(Duration::from_secs(20), || {
        scene.config().contains("127.0.0.40:")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        scene.log().matches(r#"class="runtime""#).count(),
        1,
        "the burst must be coalesced into one change:\n{}",
        scene.log()
    );
    assert_eq!(reloads(&scene), before, "scaling must not reload");
}

#[test]
fn a_failed_reload_is_retried_until_it_succeeds() {
    let a = backend("a");
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let gate = tempfile::tempdir().unwrap();
    let open = gate.path().join("open");
    // A reload command that fails while the gate is closed, like a service manager that is down.
    let command = format!(
        "test -f {} || {{ echo Failed to connect >&2; echo the gate is closed >&2; exit 1; }}; \
         kill -USR2 \"$(cat {{dir}}/haproxy.pid)\"",
        open.display()
    );
    let scene = Scene::start_reloading_with(
        &api.url(),
        &["--reload-method", "command", "--reload-cmd", &command],
        &[],
    );
    scene.wait_until(Duration::from_secs(20), || {
        scene.log().contains("the gate is closed")
    });
    assert_eq!(
        get(scene.http, "shop.test"),
        "booting",
        "HAProxy runs what it had"
    );
    assert!(scene.dir.path().join("haproxy.cfg.reload-pending").exists());
    // What the command said stays on the one line of the error, with what to change.
    let log = scene.log();
    let line = log
        .lines()
        .find(|l| l.contains("the gate is closed"))
        .unwrap();
    assert!(
        line.contains("Failed to connect / the gate is closed")
            && line.contains("make the reload command (--reload-cmd) work; retrying with backoff")
            && !line.contains("reload failed; "),
        "{line}"
    );
    let body = scene.wait_for_readiness(503);
    assert!(body.contains("the gate is closed"), "{body}");

    // The gate opens; nothing changes in the cluster; a retry reloads.
    std::fs::write(&open, "").unwrap();
    scene.wait_for("shop.test", "a");
    assert!(!scene.dir.path().join("haproxy.cfg.reload-pending").exists());
    scene.wait_for_readiness(200);
}

/// A check command that cannot run (HAProxy not installed yet) is the host's problem, not the
/// cluster's: it is named with what to do, in the log and on `/readyz`, and once it is fixed
/// the configuration is installed by a retry, without waiting for a change in the cluster.
#[test]
fn a_host_problem_is_retried_on_a_timer_until_it_is_fixed() {
    let api = with_shop(FakeApi::start(), "127.0.0.1", backend("a"));
    let dir = tempfile::tempdir().unwrap();
    let haproxy = dir.path().join("bin/haproxy");
    let check = format!("{} -c -q -f", haproxy.display());
    let config = dir.path().join("haproxy.cfg");
    let status = free_port();
    let log = dir.path().join("daemon.log");
    let _daemon = Killed(
        wasmconfd()
            .args([
                "run",
                "--allow-loopback-endpoints",
                "--reload-method",
                "command",
            ])
            .args([
                "--reload-cmd",
                "true",
                "--check-cmd",
                &check,
                "--haproxy-conf",
            ])
            .arg(&config)
            .args(["--api-servers", &api.url()])
            .args(["--status-address", &format!("127.0.0.1:{status}")])
            .args(["--set", "base.log=none", "--set", "base.admin-socket=none"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let readiness = || http_get_path(status, "wasmconfd", "/readyz");
    let started = Instant::now();
    while !readiness().1.contains("is HAProxy installed?") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            readiness()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = readiness();
    assert_eq!(code, 503);
    assert!(
        body.contains(&format!("make `{check}` run on this host")),
        "{body}"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("the running configuration stays: make `")
            && said.contains("retrying with backoff"),
        "{said}"
    );
    assert!(!config.exists());
    let metric = |name: &str| {
        let (_, metrics) = http_get_path(status, "wasmconfd", "/metrics");
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert_eq!(metric("wasmconfd_host_problem"), 1);
    assert_eq!(metric("wasmconfd_last_applied_timestamp_seconds"), 0);

    std::fs::create_dir(haproxy.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/usr/sbin/haproxy", &haproxy).unwrap();
    while readiness().0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}\n{}",
            readiness(),
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::read_to_string(&config).unwrap().contains("shop"));
    assert_eq!(metric("wasmconfd_host_problem"), 0);
    assert!(metric("wasmconfd_last_applied_timestamp_seconds") > 1_700_000_000);
    let (_, metrics) = http_get_path(status, "wasmconfd", "/metrics");
    assert!(
        metrics.contains(&format!(
            "wasmconfd_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    let seconds = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"wasmconfd_guest_render_seconds{guest="20-http"} "#))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(seconds.is_some_and(|s| s > 0.0 && s < 10.0), "{metrics}");
    assert!(
        metrics.contains("wasmconfd_guest_failing{guest=\"20-http\"} 0\n"),
        "{metrics}"
    );
}

/// The target is 2 s from the change (measured 1.5-1.6 s on an idle machine: the 403 second, at
/// most 500 ms to the next try, the 200 ms debounce, the Runtime API); the test allows 4 s for a
/// busy machine. Before, the restart cost 7 s and more (410 counted as an error, and one backoff
/// growing to 30 s for every watch). `--nocapture` prints the time.
#[test]
fn after_an_api_server_restart_a_change_applies_within_seconds() {
    let (a, b) = (backend("a"), backend("b"));
    let mut api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "a");

    // Restarted on a compacted etcd: every watch resuming from before gets 410 Gone, and for
    // its first second every request is refused while its authorizer warms up.
    api.stop();
    api.jump_ahead();
    api.set_fault(Fault::Forbidden);
    api.restart();
    let changed = Instant::now();
    api.apply(slice("shop", &["127.0.0.1"], b));
    std::thread::sleep(Duration::from_secs(1));
    api.set_fault(Fault::None);
    scene.wait_for("shop.test", "b");
    let took = changed.elapsed();
    eprintln!("the change made right after the restart was applied in {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "the change took {took:?}:\n{}",
        scene.log()
    );
    // The watches list again once the API answers: under load the change can reach the daemon
    // before that (see issue 15's notes), so the line is waited for rather than expected at once.
    scene.wait_until(Duration::from_secs(4), || {
        scene.log().contains("resource version gone")
    });
}

#[test]
fn while_one_resources_watch_fails_changes_to_the_others_apply() {
    let (a, b) = (backend("a"), backend("b"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "a");

    // Every EndpointSlice request fails from now on; the open watches are cut.
    api.set_fault_on(Kind::EndpointSlice, Fault::Status500);
    api.drop_connections();
    let failing = |scene: &Scene| {
        scene
            .log()
            .lines()
            .filter(|l| l.contains("watch failed") && l.contains("endpointslices"))
            .count()
    };
    // The 1st, 2nd, 4th and 8th failures in a row are logged: it has been failing for a while.
    scene.wait_until(Duration::from_secs(20), || failing(&scene) >= 4);

    let changed = Instant::now();
    api.apply(service("shop", "shop.test,shop2.test"));
    scene.wait_for("shop2.test", "a");
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "a Service change waited {took:?} for the failing EndpointSlice watch:\n{}",
        scene.log()
    );

    // The failing watch recovers by itself once the API answers again.
    api.set_fault(Fault::None);
    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_for("shop.test", "b");
}

#[test]
fn readiness_comes_from_haproxy_itself() {
    let a = backend("a");
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let mut scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "a");
    scene.wait_for_readiness(200);

    // The daemon restarts with the configuration installed, and HAProxy is gone: the file on
    // disk matches the render, but nothing serves it.
    scene.stop_daemon();
    scene.stop_haproxy();
    scene.start_daemon();
    scene.wait_until(Duration::from_secs(20), || {
        scene
            .get_status("/readyz")
            .1
            .contains("HAProxy does not answer")
    });
    let (code, body) = scene.get_status("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("master.sock"), "{body}");

    scene.start_haproxy();
    scene.wait_for_readiness(200);
    scene.wait_for("shop.test", "a");
}

/// Objects that are invalid, whole or in part, beside good ones in a live cluster: each is
/// warned about once (not at every render), counted, and every good service is routed. A redis
/// service asking for the http frontend's port is left out, and takes no request.
#[test]
fn hostile_objects_are_warned_about_once_and_every_good_service_is_routed() {
    let (a, b, thief) = (backend("a"), backend("b"), backend("thief"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    // The http guest's very address, so that two listeners would split its connections.
    let scene = Scene::start(&api.url(), &["--set", "redis.bind-address=127.0.0.1"]);
    scene.wait_for("shop.test", "a");

    let hostile_slice = |name: &str, address: &str| {
        let mut slice = slice("shop", &[address], a);
        slice["metadata"]["name"] = json!(name);
        slice
    };
    api.apply(hostile_slice(
        "shop-newline",
        "10.1.21.1\n  server x 10.97.0.1:80",
    ));
    api.apply(hostile_slice("shop-metadata", "169.254.169.254"));
    api.apply(hostile_slice("shop-hostname", "evil.example.com"));
    let mut star = service("star", "*");
    star["metadata"]["namespace"] = json!("evil");
    api.apply(star);
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "thief", "namespace": "evil", "creationTimestamp": "2020-01-01T00:00:00Z",
                     "annotations": {"wasmconfd.io/proto": "redis",
                                     "wasmconfd.io/listen-port": scene.http.to_string()}},
        "spec": {"ports": [{"name": "redis", "port": 6379}]}}));
    let mut thief_slice = slice("thief", &["127.0.0.1"], thief);
    thief_slice["metadata"]["namespace"] = json!("evil");
    api.apply(thief_slice);
    api.apply(service("blog", "blog.test"));
    api.apply(slice("blog", &["127.0.0.1"], b));
    scene.wait_for("blog.test", "b");
    scene.wait_until(Duration::from_secs(10), || {
        scene
            .get_status("/metrics")
            .1
            .contains("wasmconfd_skipped_objects 4")
    });

    // More renders: a change to a good service, twice.
    for port in [b, a] {
        api.apply(slice("blog", &["127.0.0.1"], port));
        scene.wait_for("blog.test", if port == b { "b" } else { "a" });
    }
    let log = scene.log();
    for object in [
        "EndpointSlice e2e/shop-newline",
        "EndpointSlice e2e/shop-metadata",
        "EndpointSlice e2e/shop-hostname",
        "Service evil/star",
    ] {
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(object))
            .count();
        assert_eq!(
            warnings, 1,
            "{object} warned about {warnings} times:\n{log}"
        );
    }
    let conflicts = log
        .lines()
        .filter(|l| l.contains("section `listen redis_evil_thief` left out"))
        .count();
    assert_eq!(conflicts, 1, "{log}");
    let answers: Vec<_> = (0..40).map(|_| get(scene.http, "shop.test")).collect();
    assert!(answers.iter().all(|a| a == "a"), "{answers:?}");
    assert!(!scene.config().contains("10.97.0.1"), "{}", scene.config());

    // The bad slices go: the objects are no longer skipped, and the log says so once.
    for name in ["shop-newline", "shop-metadata", "shop-hostname"] {
        assert!(api.delete(Kind::EndpointSlice, "e2e", name));
    }
    assert!(api.delete(Kind::Service, "evil", "star"));
    scene.wait_until(Duration::from_secs(10), || {
        scene
            .get_status("/metrics")
            .1
            .contains("wasmconfd_skipped_objects 0")
    });
    assert!(scene.log().contains("no longer skipped"), "{}", scene.log());
}

/// A guest that crashes on one service, or returns output the host refuses for it, routes every
/// other service, in `run`: the quarantined objects are named in the log, the metrics and
/// `/quarantined`, and released once fixed.
#[test]
fn a_guest_failing_on_one_service_keeps_routing_the_others_in_run() {
    let (a, b) = (backend("a"), backend("b"));
    let team_port = free_port();
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    api.apply(web_service("blog", "blog.test"));
    api.apply(slice("blog", &["127.0.0.1"], b));
    let scope = "    namespaces: [e2e]\n    protos: [web]\n";
    let (scene, _guests) = start_with_team_guest(&api, team_port, scope);
    scene.wait_for("shop.test", "a");
    let wait_team = |host: &str, body: &str| {
        scene.wait_until(Duration::from_secs(20), || get(team_port, host) == body)
    };
    wait_team("blog.test", "b");

    for (why, message) in [
        ("panic", "misbehave was told to panic"),
        ("newline", "control character"),
    ] {
        let mut news = web_service("news", "news.test");
        news["metadata"]["annotations"]["misbehave.wasmconfd.io/do"] = json!(why);
        api.apply(news);
        api.apply(slice("news", &["127.0.0.1"], a));
        // A change to another service of the guest still applies.
        api.apply(slice(
            "blog",
            &["127.0.0.1"],
            if why == "panic" { a } else { b },
        ));
        wait_team("blog.test", if why == "panic" { "a" } else { "b" });
        scene.wait_until(Duration::from_secs(20), || {
            let (_, page) = scene.get_status("/quarantined");
            page.contains("e2e/news") && page.contains(message)
        });
        let (_, page) = scene.get_status("/quarantined");
        assert!(
            page.contains("guest 50-team: e2e/news:") && page.contains(message),
            "{page}"
        );
        let (_, metrics) = scene.get_status("/metrics");
        assert!(
            metrics
                .contains(r#"wasmconfd_quarantined_objects{guest="50-team",object="e2e/news"} 1"#),
            "{metrics}"
        );
        assert!(scene.log().contains("quarantined"), "{}", scene.log());
        assert_ne!(get(team_port, "news.test"), "a");
    }

    // Fixed, it is released and routed.
    api.apply(web_service("news", "news.test"));
    wait_team("news.test", "a");
    assert_eq!(
        scene.get_status("/quarantined").1,
        "no service is quarantined\n"
    );
    assert!(
        scene.log().contains("no longer quarantined"),
        "{}",
        scene.log()
    );
}

/// A render that removes 9 of 10 servers at once, emptying 9 of 10 backends (as an emptied
/// EndpointSlice list after an RBAC mistake would), is held back: HAProxy serves on, readiness
/// and the metrics say so, and it applies once it has persisted for --hold-removal-for. A second
/// such render applies at once when confirmed.
#[test]
fn the_blast_radius_guard_holds_back_a_render_that_drops_most_servers() {
    let a = backend("a");
    let api = FakeApi::start();
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    for name in &names {
        api.apply(service(name, &format!("{name}.test")));
        api.apply(slice(name, &["127.0.0.1"], a));
    }
    let scene = Scene::start(&api.url(), &["--hold-removal-for", "4s"]);
    scene.wait_for("s9.test", "a");
    scene.wait_for_readiness(200);

    for name in &names[1..] {
        api.delete(Kind::EndpointSlice, "e2e", &format!("{name}-1"));
    }
    let body = scene.wait_for_readiness(503);
    assert!(
        body.contains(
            "a render that takes away 9 of 10 backends with servers (90%), removing them or all their \
             servers, is held back"
        ),
        "{body}"
    );
    assert_eq!(
        get(scene.http, "s9.test"),
        "a",
        "held: the old configuration serves"
    );
    let (_, metrics) = scene.get_status("/metrics");
    assert!(metrics.contains("wasmconfd_removal_held 1"), "{metrics}");
    assert!(
        metrics.contains("wasmconfd_held_renders_total 1"),
        "{metrics}"
    );
    let held_at = Instant::now();

    // Persisting for the hold time, it applies.
    scene.wait_until(Duration::from_secs(20), || {
        get(scene.http, "s9.test") != "a"
    });
    assert!(
        held_at.elapsed() >= Duration::from_secs(2),
        "applied too early"
    );
    assert_eq!(get(scene.http, "s0.test"), "a");
    scene.wait_for_readiness(200);
    assert!(
        scene
            .log()
            .contains("applying the held render: it persisted"),
        "{}",
        scene.log()
    );

    // Back, then gone again: held, and applied at once when confirmed.
    for name in &names[1..] {
        api.apply(slice(name, &["127.0.0.1"], a));
    }
    scene.wait_for("s9.test", "a");
    for name in &names[1..] {
        api.delete(Kind::EndpointSlice, "e2e", &format!("{name}-1"));
    }
    scene.wait_for_readiness(503);
    let (code, _) = common::http_post(scene.status, "/confirm-removal");
    assert_eq!(code, 202);
    scene.wait_until(Duration::from_secs(3), || get(scene.http, "s9.test") != "a");
    assert!(
        scene.log().contains("applying the held render: confirmed"),
        "{}",
        scene.log()
    );
}

/// A scope that selects namespaces by label follows the Namespace objects: labelling a
/// namespace hands its services to the team guest, unlabelling takes them away, without a
/// restart.
#[test]
fn a_scope_selecting_namespaces_by_label_follows_the_labels() {
    let a = backend("a");
    let team_port = free_port();
    let api = FakeApi::start();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "e2e", "labels": {"team": "other"}}}));
    api.apply(web_service("blog", "blog.test"));
    api.apply(slice("blog", &["127.0.0.1"], a));
    let scope = "    namespace-labels: {team: blue}\n";
    let (scene, _guests) = start_with_team_guest(&api, team_port, scope);
    let routed = || get(team_port, "blog.test") == "a";
    scene.wait_until(Duration::from_secs(20), || {
        scene.config().contains("frontend team")
    });
    assert!(!routed(), "namespace e2e is not labelled team=blue yet");

    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "e2e", "labels": {"team": "blue"}}}));
    scene.wait_until(Duration::from_secs(20), routed);

    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "e2e", "labels": {"team": "green"}}}));
    scene.wait_until(Duration::from_secs(20), || !routed());
}

/// A change of servers only reaches HAProxy before anything is checked or written: the check
/// command (a wrapper that records what HAProxy runs, then runs `haproxy -c`) finds the new
/// server already in the running HAProxy.
#[test]
fn a_server_change_reaches_haproxy_before_the_check_runs() {
    let (a, b) = (backend("a"), backend("b"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let dir = tempfile::tempdir().unwrap();
    let (script, seen) = (dir.path().join("check.py"), dir.path().join("seen.log"));
    std::fs::write(
        &script,
        format!(
            "import socket, subprocess, sys\n\
             admin, seen = sys.argv[1], {seen:?}\n\
             try:\n    s = socket.socket(socket.AF_UNIX)\n    s.connect(admin)\n    \
             s.sendall(b'show servers state\\n')\n    state = b''.join(iter(lambda: s.recv(65536), b''))\n\
             except OSError as e:\n    state = str(e).encode()\n\
             open(seen, 'ab').write(b'--- check\\n' + state)\n\
             sys.exit(subprocess.call(['haproxy', '-c', '-q', '-f', sys.argv[2]]))\n"
        ),
    )
    .unwrap();
    let check = format!("python3 {} {{dir}}/admin.sock", script.display());
    let scene = Scene::start(&api.url(), &["--check-cmd", &check]);
    scene.wait_for("shop.test", "a");
    let reloads_before = reloads(&scene);
    let guest_runs = || {
        let (_, metrics) = scene.get_status("/metrics");
        let line = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wasmconfd_guest_renders_total "));
        line.unwrap().parse::<u64>().unwrap()
    };
    let runs_before = guest_runs();

    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_for_only("shop.test", "b");
    scene.wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .matches("--- check")
            .count()
            >= 2
    });
    // The first check is of the first configuration; the second, of the change.
    let log = std::fs::read_to_string(&seen).unwrap();
    let second = log.split("--- check").nth(2).unwrap();
    assert!(
        second.contains(&format!("127.0.0.1:{b}")),
        "the check ran before HAProxy had the new server:\n{second}"
    );
    assert_eq!(reloads(&scene), reloads_before, "{}", scene.log());
    assert_eq!(
        guest_runs(),
        runs_before + 1,
        "only the http guest sees the change"
    );
}

/// After a restart of wasmconfd, a change of servers still needs no reload: the fragments the
/// last run installed are kept beside the configuration.
#[test]
fn after_a_daemon_restart_a_server_change_needs_no_reload() {
    let (a, b) = (backend("a"), backend("b"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let mut scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "a");
    let reloads_before = reloads(&scene);
    // Traffic flows as soon as HAProxy has reloaded; the daemon then records that and keeps
    // the fragments. Stopped before, the next start rightly reloads: not what this is about.
    let kept = scene.dir.path().join("haproxy.cfg.fragments.json");
    scene.wait_until(Duration::from_secs(10), || kept.exists());

    scene.stop_daemon();
    scene.start_daemon();
    scene.wait_until(Duration::from_secs(20), || {
        scene.log().contains("configuration unchanged")
            || scene
                .log()
                .contains("the installed configuration is the one the last run left")
    });
    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_for_only("shop.test", "b");
    assert_eq!(reloads(&scene), reloads_before, "{}", scene.log());
    assert!(
        scene.log().contains(r#"class="runtime""#),
        "{}",
        scene.log()
    );
}

/// A Service of proto https for `domain` whose TLS is terminated with Secret `secret`,
/// redirected from plain HTTP when `redirect`, its backend speaking HTTP on port `http`.
fn tls_service(name: &str, domain: &str, secret: &str, redirect: bool) -> Value {
    let mut service = service(name, domain);
    let annotations = &mut service["metadata"]["annotations"];
    annotations["wasmconfd.io/proto"] = json!("https");
    annotations["wasmconfd.io/port"] = json!("http");
    annotations["wasmconfd.io/tls-secret"] = json!(secret);
    if redirect {
        annotations["wasmconfd.io/ssl-redirect"] = json!("true");
    }
    service
}

/// The serial (lower-case hexadecimal, no leading zeros) and subject of the certificate HAProxy
/// presents on 127.0.0.1:`port` for server name `name`, as `openssl s_client` sees it.
fn presented(port: u16, name: &str) -> (String, String) {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null \
         | openssl x509 -noout -serial -subject"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let serial = field("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase();
    (serial, field("subject="))
}

/// `curl https://NAME:PORT/` trusting `ca` (a file): (HTTP status, body).
fn curl_https(port: u16, name: &str, ca: &Path) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let error = String::from_utf8_lossy(&out.stderr);
    (code.to_string(), format!("{body}{error}"))
}

#[test]
fn certificates_from_secrets_are_served_by_name_and_renewed_without_a_reload() {
    let ca = TestCa::new();
    let (shop, blog) = (backend("shop"), backend("blog"));
    let api = FakeApi::start();
    api.apply(tls_service("shop", "shop.test", "shop-tls", true));
    api.apply(slice("shop", &["127.0.0.1"], shop));
    api.apply(tls_service("blog", "blog.test", "blog-tls", false));
    api.apply(slice("blog", &["127.0.0.1"], blog));
    api.apply(ca.secret("e2e", "shop-tls", &["shop.test"], 0x100));
    let scene = Scene::start(&api.url(), &["--tls-secrets"]);
    let ca_file = scene.dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let https = scene.https;
    scene.wait_until(Duration::from_secs(20), || {
        presented(https, "shop.test").0 == "100"
    });

    // Each name gets its own certificate; others, and names without one yet, the default.
    let (code, body) = curl_https(https, "shop.test", &ca_file);
    assert_eq!(code, "200", "{body}");
    assert!(body.starts_with("shop\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    let default = "CN = wasmconfd default certificate";
    assert_eq!(presented(https, "unknown.test").1, default);
    assert_eq!(presented(https, "blog.test").1, default);
    assert!(
        scene.log().contains("TLS Secret blog-tls"),
        "{}",
        scene.log()
    );
    // Plain HTTP to a redirecting service is sent to HTTPS.
    let response = common::http_response(scene.http, "shop.test", "/cart?x=1").unwrap();
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response.contains("location: https://shop.test/cart?x=1"),
        "{response}"
    );
    // The key is on disk for HAProxy alone.
    use std::os::unix::fs::PermissionsExt as _;
    let file = scene.dir.path().join("certs/e2e_shop-tls.pem");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        scene.get_status("/metrics").1.contains(
            "wasmconfd_certificate_expiry_seconds{namespace=\"e2e\",secret=\"shop-tls\"}"
        )
    );

    // Under constant load: a Secret made after its service, a renewal, then a broken Secret.
    let before = workers(&scene);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, ca_file) = (stop.clone(), ca_file.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                answers.push(curl_https(https, "shop.test", &ca_file));
            }
            answers
        })
    };
    api.apply(ca.secret("e2e", "blog-tls", &["blog.test"], 0x200));
    scene.wait_until(Duration::from_secs(20), || {
        presented(https, "blog.test").0 == "200"
    });
    assert_eq!(curl_https(https, "blog.test", &ca_file).0, "200");

    api.apply(ca.secret("e2e", "shop-tls", &["shop.test"], 0x101));
    scene.wait_until(Duration::from_secs(20), || {
        presented(https, "shop.test").0 == "101"
    });

    let (cert, _) = ca.issue(&["shop.test"], 0x102, 30);
    let (_, foreign_key) = ca.issue(&["shop.test"], 0x103, 30);
    api.apply(tls_secret("e2e", "shop-tls", &cert, &foreign_key));
    scene.wait_until(Duration::from_secs(20), || {
        scene.log().contains("Secret e2e/shop-tls")
            && scene.log().contains("not the key of the certificate")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        presented(https, "shop.test").0,
        "101",
        "the last good one stays"
    );

    assert!(api.delete(Kind::Secret, "e2e", "blog-tls"));
    scene.wait_until(Duration::from_secs(20), || {
        presented(https, "blog.test").1 == default
    });

    stop.store(true, Ordering::Relaxed);
    let answers = load.join().unwrap();
    let failed: Vec<_> = answers.iter().filter(|(code, _)| code != "200").collect();
    assert!(
        answers.len() > 10 && failed.is_empty(),
        "{} requests, failed: {failed:?}",
        answers.len()
    );
    assert_eq!(workers(&scene), before, "no reload:\n{}", scene.log());
    for change in [
        "new ssl cert certs/e2e_blog-tls.pem (serial 200)",
        "set ssl cert certs/e2e_shop-tls.pem (serial 101)",
        "del ssl cert certs/e2e_blog-tls.pem",
    ] {
        // HAProxy may show a change a moment before the daemon has logged it.
        scene.wait_until(Duration::from_secs(10), || scene.log().contains(change));
    }
}

/// The DOM of `url` after headless Chromium loaded it, and a screenshot of it into `png`.
fn chromium(url: &str, png: &Path) -> String {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium (scripts/setup.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screenshot = format!("--screenshot={}", png.display());
    run(&[&screenshot, "--window-size=1400,1100"]);
    run(&["--dump-dom"])
}

/// The table `id` of `dom`: its rows, each the text of its cells.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in {dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    table
        .split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|cell| cell.split("</td>").next().unwrap().to_string())
                .collect()
        })
        .filter(|cells: &Vec<String>| !cells.is_empty())
        .collect()
}

/// `GET /` is a page a browser renders with what the daemon knows: the guests with their
/// source, digest and last run, the objects left out and why, the last applies; `/status` is
/// the same as JSON. `UPDATE_DOCS=1` puts its screenshot into docs/.
#[test]
fn the_status_page_shows_the_guests_what_was_left_out_and_the_applies() {
    let (a, b) = (backend("a"), backend("b"));
    let api = with_shop(FakeApi::start(), "127.0.0.1", a);
    let mut broken = service("broken", "not a domain!");
    broken["metadata"]["namespace"] = json!("team-b");
    api.apply(broken);
    let scene = Scene::start(&api.url(), &[]);
    scene.wait_for("shop.test", "a");
    api.apply(slice("shop", &["127.0.0.1"], b));
    scene.wait_for("shop.test", "b");

    let url = format!("http://127.0.0.1:{}/", scene.status);
    let png = scene.dir.path().join("status-page.png");
    let dom = chromium(&url, &png);
    assert!(dom.contains("Ready: in step with the cluster"), "{dom}");
    let guests = table_rows(&dom, "guests");
    let slots: Vec<_> = guests.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(slots, ["00-base", "20-http", "30-https", "40-redis"]);
    let http = &guests[1];
    assert_eq!(http[1], "bundled");
    assert!(http[2].starts_with("sha256:"), "{http:?}");
    assert_eq!(http[4], "wasmconfd:haproxy/guest@0.5.0");
    assert_eq!(http[7], "1", "it routes one service");
    assert_eq!(http[10], "ok");
    let skipped = table_rows(&dom, "skipped");
    assert!(
        skipped
            .iter()
            .any(|row| row[0] == "Service team-b/broken" && row[1].contains("not a domain!")),
        "{skipped:?}"
    );
    let applies = table_rows(&dom, "applies");
    assert_eq!(applies[0][1], "runtime", "{applies:?}");
    assert!(applies[0][2].contains("127.0.0.1:"), "{applies:?}");
    assert_eq!(applies.last().unwrap()[1], "reload", "{applies:?}");
    let png = std::fs::read(&png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(common::repo().join("docs/status-page.png"), &png).unwrap();
    }

    let (code, json) = scene.get_status("/status");
    assert_eq!(code, 200);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["guests"][1]["slot"], "20-http");
    assert_eq!(json["guests"][1]["last_run"]["result"], "ok");
    assert_eq!(json["skipped"][0]["object"], "Service team-b/broken");
    assert_eq!(json["not_ready"], Value::Null);
}

/// An object left out gets one Warning Event on itself, which `kubectl describe` shows (it
/// matches the object's uid), however many renders follow; `--no-events` publishes none.
#[test]
fn an_object_left_out_gets_one_warning_event_on_itself() {
    for events in [true, false] {
        let (a, b) = (backend("a"), backend("b"));
        let api = with_shop(FakeApi::start(), "127.0.0.1", a);
        let mut broken = service("broken", "not a domain!");
        broken["metadata"]["namespace"] = json!("team-b");
        api.apply(broken);
        let flags: &[&str] = if events { &[] } else { &["--no-events"] };
        let scene = Scene::start(&api.url(), flags);
        scene.wait_for("shop.test", "a");
        api.apply(slice("shop", &["127.0.0.1"], b));
        scene.wait_for("shop.test", "b");
        let on_broken = || -> Vec<Value> {
            api.events()
                .into_iter()
                .map(|(_, event)| event)
                .filter(|event| event["regarding"]["name"] == "broken")
                .collect()
        };
        if !events {
            std::thread::sleep(Duration::from_millis(300));
            assert!(api.events().is_empty(), "{:?}", api.events());
            continue;
        }
        scene.wait_until(Duration::from_secs(10), || !on_broken().is_empty());
        std::thread::sleep(Duration::from_millis(300));
        let [event] = on_broken()
            .try_into()
            .unwrap_or_else(|all: Vec<Value>| panic!("one Event, not {}: {all:#?}", all.len()));
        assert_eq!(event["regarding"]["uid"], "uid-Service-team-b-broken");
        assert_eq!(event["regarding"]["kind"], "Service");
        assert_eq!(event["metadata"]["namespace"], "team-b");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "WasmconfdSkipped");
        assert_eq!(event["reportingController"], "wasmconfd");
        let note = event["note"].as_str().unwrap();
        assert!(
            note.starts_with("left out: ") && note.contains("not a domain!"),
            "{note}"
        );
    }
}
