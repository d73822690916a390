//! `wasmconfd guest new` as a guest author uses it: the new project, in each language, builds as
//! it is and passes its own `./test.sh` (build, render through wasmconfd, compare), and that
//! test fails when the output changes.

mod common;

use common::{repo, run, wasmconfd};
use std::path::Path;
use std::process::Command;

/// `wasmconfd guest new NAME --lang LANGUAGE --dir DIR`.
fn new_guest(name: &str, language: &str, dir: &Path) -> (bool, String, String) {
    run(wasmconfd()
        .args(["guest", "new", name, "--lang", language, "--dir"])
        .arg(dir))
}

/// Run a script of the project at `dir` the way its author would, with this wasmconfd.
fn project(dir: &Path, program: &str, args: &[&str]) -> (bool, String, String) {
    run(Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("WASMCONFD", env!("CARGO_BIN_EXE_wasmconfd"))
        // The tests' compile cache, not the user's ~/.cache.
        .env(
            "WASMCONFD_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-guests"),
        )
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
        )
        // The outer cargo's settings are not the guest build's.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET"))
}

fn passes_its_own_test(language: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let project_dir = dir.path().join("demo");
    let (ok, stdout, stderr) = new_guest("demo", language, &project_dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("./test.sh"), "{stdout}");
    if language == "javascript" {
        // The same pinned componentize-js as the example guest's, which scripts/setup.sh
        // installs: reused rather than downloaded again for each test run.
        std::os::unix::fs::symlink(
            repo().join("examples/guests/paths-js/node_modules"),
            project_dir.join("node_modules"),
        )
        .unwrap();
    }
    let (ok, stdout, stderr) = project(&project_dir, "./test.sh", &[]);
    assert!(
        ok && stdout.contains("passes haproxy -c, and the output matches"),
        "the new {language} project fails its own test:\n{stdout}\n{stderr}"
    );
    keeps_to_the_team_policy(&project_dir);
    dir
}

/// What the project's README says: as a team guest in its own namespace, its output passes.
fn keeps_to_the_team_policy(project_dir: &Path) {
    let config = project_dir.join("build/guests.yaml");
    std::fs::write(
        &config,
        "guests:\n  demo:\n    trust: team\n    namespaces: [shop]\n    listen-ports: [8080]\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(project_dir.join("test/cluster.yaml"))
        .arg("--guests")
        .arg(project_dir.join("build/guests"))
        .arg("--guests-config")
        .arg(&config));
    assert!(
        ok && !stderr.contains("refused") && stdout.contains("frontend demo"),
        "as a team guest:\n{stderr}"
    );
}

#[test]
fn a_new_rust_guest_passes_its_tests() {
    let dir = passes_its_own_test("rust");
    let project_dir = dir.path().join("demo");
    let (ok, stdout, stderr) = project(&project_dir, "cargo", &["test", "--quiet"]);
    assert!(ok, "cargo test in the new project:\n{stdout}\n{stderr}");
    // It carries its own SDK: nothing points back at this checkout.
    let manifest = std::fs::read_to_string(project_dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"wasmconfd-guest = { path = "sdk" }"#),
        "{manifest}"
    );
    assert!(!manifest.contains(repo().to_str().unwrap()), "{manifest}");
    assert_eq!(
        std::fs::read_to_string(project_dir.join("sdk/src/lib.rs")).unwrap(),
        std::fs::read_to_string(repo().join("guest-sdk/src/lib.rs")).unwrap()
    );
}

#[test]
fn a_new_python_guest_passes_its_test_which_catches_a_changed_output_and_a_bad_one() {
    let dir = passes_its_own_test("python");
    let project_dir = dir.path().join("demo");
    let app = project_dir.join("app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, text.replace("\":8080\"", "\":9090\"")).unwrap();
    let (ok, stdout, _) = project(&project_dir, "./test.sh", &[]);
    assert!(!ok, "a changed output must fail the test:\n{stdout}");
    assert!(stdout.contains("+    bind :9090"), "{stdout}");

    let (ok, _, stderr) = project(&project_dir, "./test.sh", &["--update"]);
    assert!(ok, "--update accepts the new output:\n{stderr}");
    let (ok, _, stderr) = project(&project_dir, "./test.sh", &[]);
    assert!(ok, "{stderr}");

    // A configuration HAProxy refuses fails the test, even once accepted as expected.
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(
        &app,
        text.replacen("\"mode\", \"http\"", "\"mode\", \"htttp\"", 1),
    )
    .unwrap();
    let (ok, stdout, stderr) = project(&project_dir, "./test.sh", &["--update"]);
    assert!(!ok, "mode htttp must fail the test:\n{stdout}");
    assert!(
        stderr.contains("htttp"),
        "HAProxy's complaint is shown:\n{stderr}"
    );
}

#[test]
fn a_new_javascript_guest_passes_its_test() {
    passes_its_own_test("javascript");
}

#[test]
fn bad_names_and_used_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = new_guest("My Guest", "python", &dir.path().join("x"));
    assert!(!ok);
    assert!(
        stderr.contains("is not a proto") && stderr.contains("a guest's name is also the proto"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("taken"), "").unwrap();
    let (ok, _, stderr) = new_guest("demo", "python", dir.path());
    assert!(!ok);
    assert!(
        stderr.contains("already exists and is not empty"),
        "{stderr}"
    );
}
