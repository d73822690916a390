//! The example guest of `examples/guests`, written in Rust, Python and JavaScript: each is built
//! with its own toolchain by its own `build.sh`, as its README says, loaded by the host, and must
//! render the example cluster to `examples/guests/expected.cfg` (and `expected-paths.map`),
//! which HAProxy accepts. `UPDATE_GOLDEN=1` rewrites the expectations from the Rust build.

mod common;

use common::{
    backend, free_port, haproxy_check, http_response, repo, run, start_haproxy, wasmconfd,
};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Build the example in `examples/guests/paths-<language>` into a guest directory of its own,
/// beside empty `.conf` files that turn off the bundled http, https and redis guests, so the
/// output is the base guest's and this one's.
fn build(language: &str) -> PathBuf {
    let guests = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("examples")
        .join(language);
    std::fs::create_dir_all(&guests).unwrap();
    for slot in ["20-http", "30-https", "40-redis"] {
        std::fs::write(guests.join(format!("{slot}.conf")), "").unwrap();
    }
    let script = repo().join(format!("examples/guests/paths-{language}/build.sh"));
    let output = Command::new(&script)
        .arg(guests.join("50-paths.wasm"))
        .env(
            "TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-target"),
        )
        // The outer cargo's settings are not the guest build's.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed (scripts/setup.sh installs the tools):\n{}{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    guests
}

/// Render the example cluster with the guests in `guests`, twice with one compile cache: the
/// first start compiles the guest and says so, the second uses the cache. The configuration,
/// with the guest directory left out of its comments, and the routes map.
fn render(guests: &Path) -> (String, String) {
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = out.path().join("haproxy.cfg");
    let start = || {
        let (ok, _, stderr) = run(wasmconfd()
            .args(["render", "--check", "--cluster"])
            .arg(repo().join("examples/cluster.yaml"))
            .arg("--guests")
            .arg(guests)
            .arg("--cache-dir")
            .arg(cache.path())
            .arg("--output")
            .arg(&config));
        assert!(ok, "render failed:\n{stderr}");
        stderr
    };
    let cold = start();
    assert!(
        cold.contains(r#"compiling guest guest="paths""#),
        "a first start says it compiles the guest:\n{cold}"
    );
    let warm = start();
    assert!(
        !warm.contains("compiling"),
        "a second start uses the compile cache:\n{warm}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let map = std::fs::read_to_string(out.path().join("maps/paths.map")).unwrap();
    (text.replace(&format!("{}/", guests.display()), ""), map)
}

fn renders_the_expected_configuration(language: &str) {
    let (config, map) = render(&build(language));
    let expected = repo().join("examples/guests/expected.cfg");
    let expected_map = repo().join("examples/guests/expected-paths.map");
    if language == "rust" && std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected, &config).unwrap();
        std::fs::write(&expected_map, &map).unwrap();
    }
    assert_eq!(
        config,
        std::fs::read_to_string(&expected).unwrap(),
        "the {language} guest's configuration differs from {}",
        expected.display()
    );
    assert_eq!(
        map,
        std::fs::read_to_string(&expected_map).unwrap(),
        "the {language} guest's routes differ from {}",
        expected_map.display()
    );
}

#[test]
fn the_rust_example_renders_the_expected_configuration() {
    renders_the_expected_configuration("rust");
}

#[test]
fn the_python_example_renders_the_same_configuration() {
    renders_the_expected_configuration("python");
}

#[test]
fn the_javascript_example_renders_the_same_configuration() {
    renders_the_expected_configuration("js");
}

/// The expectation itself is a configuration HAProxy accepts, with its map beside it.
#[test]
fn the_expected_configuration_passes_haproxy_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haproxy.cfg");
    std::fs::copy(repo().join("examples/guests/expected.cfg"), &config).unwrap();
    std::fs::create_dir(dir.path().join("maps")).unwrap();
    std::fs::copy(
        repo().join("examples/guests/expected-paths.map"),
        dir.path().join("maps/paths.map"),
    )
    .unwrap();
    let (valid, output) = haproxy_check(&config);
    assert!(valid, "haproxy -c rejects expected.cfg:\n{output}");
}

/// The raw response (head and body), empty when there is none.
fn get(port: u16, host: &str, path: &str) -> String {
    http_response(port, host, path).unwrap_or_default()
}

/// What a client sees through HAProxy running the Rust build of the example guest: routes by
/// longest path prefix, the team header, the maintenance page, and 404.
#[test]
fn the_example_guest_routes_real_traffic_by_path() {
    let (api, v2, grafana) = (backend("api"), backend("api-v2"), backend("grafana"));
    let guests = build("rust");
    let dir = tempfile::tempdir().unwrap();
    let service = |name: &str, path: &str, team: &str, port: u16, ready: bool| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: tools, annotations: \
             {{wasmconfd.io/proto: paths, wasmconfd.io/domain: tools.test, wasmconfd.io/path: {path}, \
             paths.wasmconfd.io/team: {team}}}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
             metadata: {{name: {name}-1, namespace: tools, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             ports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: {ready}}}}}]\n---\n"
        )
    };
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        [
            service("api", "/api", "platform", api, true),
            service("api-v2", "/api/v2", "platform", v2, true),
            service("grafana", "/grafana", "observability", grafana, true),
            service("wiki", "/wiki", "docs", free_port(), false),
        ]
        .concat(),
    )
    .unwrap();
    let http = free_port();
    let config = dir.path().join("haproxy.cfg");
    let (ok, _, stderr) = run(wasmconfd()
        .args([
            "render",
            "--check",
            "--allow-loopback-endpoints",
            "--cluster",
        ])
        .arg(&cluster)
        .arg("--guests")
        .arg(&guests)
        .arg("--output")
        .arg(&config)
        .args(["--set", &format!("paths.bind=127.0.0.1:{http}")])
        .args(["--set", "base.log=none", "--set", "base.admin-socket=none"]));
    assert!(ok, "{stderr}");
    let _haproxy = start_haproxy(
        &[OsStr::new("-db"), OsStr::new("-f"), config.as_os_str()],
        &dir.path().join("haproxy.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(http, "tools.test", "/").is_empty() {
        assert!(Instant::now() < deadline, "HAProxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The echo backends answer with their name, then the request they got.
    let body_starts = |path: &str, name: &str| {
        let response = get(http, "tools.test", path);
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(body.starts_with(&format!("{name}\n")), "{path}: {response}");
        response
    };
    body_starts("/api/v2/users", "api-v2");
    let response = body_starts("/api/users", "api");
    assert!(
        response.to_ascii_lowercase().contains("x-team: platform"),
        "{response}"
    );
    body_starts("/grafana/d/home", "grafana");

    let maintenance = get(http, "tools.test", "/wiki/start");
    assert!(
        maintenance.starts_with("HTTP/1.1 503") && maintenance.contains("Team docs is on it."),
        "{maintenance}"
    );
    let unknown = get(http, "tools.test", "/elsewhere");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
}
