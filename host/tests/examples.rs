//! The example guest of `examples/guests`, written in Rust, Python and JavaScript: each is built
//! with its own toolchain by its own `build.sh`, as its README says, loaded by the host, and must
//! render the example cluster to `examples/guests/expected.cfg` (and `expected-paths.map`),
//! which HAProxy accepts. `UPDATE_GOLDEN=1` rewrites the expectations from the Rust build.

mod common;

use common::{haproxy_check, repo, run, wasmconfd};
use std::path::{Path, PathBuf};
use std::process::Command;

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
