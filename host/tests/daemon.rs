//! `wasmconfd run` end to end: the fake API server, the real daemon, the real HAProxy in
//! master-worker mode, and HTTP traffic through it to backends on loopback.

mod common;

use common::{Killed, backend, free_port, http_get, wasmconfd};
use fake_apiserver::FakeApi;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first line of the body answered for `Host: host`: the backend's name, HAProxy's own
/// message, or the error.
fn get(port: u16, host: &str) -> String {
    http_get(port, host)
        .1
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn wait_for(port: u16, host: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(port, host) != body {
        assert!(
            Instant::now() < deadline,
            "{host} still answers {:?}, not {body:?}",
            get(port, host)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn service(name: &str, domain: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "e2e", "creationTimestamp": "2025-01-01T00:00:00Z",
                        "annotations": {"wasmconfd.io/domain": domain, "wasmconfd.io/proto": "http"}},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

fn slice(service: &str, ports: &[u16]) -> serde_json::Value {
    // Every backend listens on 127.0.0.1; endpoints differ by port, so each needs its own slice.
    let port = ports.first().copied().unwrap_or(1);
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": format!("{service}-1"), "namespace": "e2e",
                        "labels": {"kubernetes.io/service-name": service}},
           "ports": [{"name": "http", "port": port}],
           "endpoints": if ports.is_empty() { json!([]) } else { json!([{"addresses": ["127.0.0.1"]}]) }})
}

fn start_haproxy(dir: &Path, http: u16) -> (Killed, std::path::PathBuf) {
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, format!(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         frontend boot\n    bind 127.0.0.1:{http}\n    http-request return status 503 content-type text/plain string booting\n"
    )).unwrap();
    let socket = dir.join("master.sock");
    let child = Command::new("haproxy")
        .arg("-W")
        .arg("-S")
        .arg(&socket)
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy is not installed: install it (apt-get install haproxy); .ci/run does");
    wait_for(http, "any", "booting");
    (Killed(child), socket)
}

#[test]
fn traffic_follows_the_cluster_and_survives_the_api_going_away() {
    let (a, b) = (backend("a"), backend("b"));
    let mut api = FakeApi::start();
    api.apply(service("shop", "shop.test"));
    api.apply(slice("shop", &[a]));

    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port(), free_port());
    let (_haproxy, socket) = start_haproxy(dir.path(), http);
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let _daemon = Killed(
        wasmconfd()
            .arg("run")
            .arg("--haproxy-conf")
            .arg(dir.path().join("haproxy.cfg"))
            .args(["--reload-method", "master-socket", "--master-socket"])
            .arg(&socket)
            .args(["--api-servers", &api.url(), "--api-timeout", "5s"])
            .args(["--set", &format!("http.bind=127.0.0.1:{http}")])
            .args(["--set", &format!("https.bind=127.0.0.1:{https}")])
            .args(["--set", "base.log=none"])
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    wait_for(http, "shop.test", "a");
    let lists_after_sync = api.lists();
    assert_eq!(
        lists_after_sync,
        2,
        "one list of services and one of endpointslices:\n{}",
        daemon_log()
    );

    // Endpoints move, a service is added: traffic follows.
    api.apply(slice("shop", &[b]));
    wait_for(http, "shop.test", "b");
    api.apply(service("blog", "blog.test"));
    api.apply(slice("blog", &[a]));
    wait_for(http, "blog.test", "a");
    // A service is deleted: its host is unknown again.
    api.delete(fake_apiserver::Kind::Service, "e2e", "blog");
    wait_for(http, "blog.test", "no service for this host");

    // No change: no list and no reload.
    let config = std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        api.lists(),
        lists_after_sync,
        "no list request without a change:\n{}",
        daemon_log()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap(),
        config
    );

    // The API goes away: HAProxy keeps serving what it had.
    api.stop();
    for _ in 0..10 {
        assert_eq!(get(http, "shop.test"), "b");
        std::thread::sleep(Duration::from_millis(200));
    }
    // It comes back, with a change made meanwhile: the daemon catches up.
    api.apply(slice("shop", &[a]));
    api.restart();
    wait_for(http, "shop.test", "a");
    assert!(daemon_log().contains("watch failed"), "{}", daemon_log());
}
