//! Shared by the integration tests: paths, the binary, HAProxy, and test guests built locally.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `wasmconfd` with a compile cache shared by all tests, so each guest compiles once per run.
pub fn wasmconfd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmconfd"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "WASMCONFD_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-guests"),
        );
    command
}

/// Run and return (success, stdout, stderr).
pub fn run(command: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("cannot run command");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `haproxy -c -f config`: (valid, output). Panics when HAProxy is missing: a test that needs it
/// must fail, never pass without it.
pub fn haproxy_check(config: &Path) -> (bool, String) {
    let output = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(config)
        .output()
        .expect("haproxy is not installed: install it (apt-get install haproxy); .ci/run does");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The misbehaving test guest, built for wasm32-wasip2 once per test process, in its own target
/// directory (the outer cargo holds the workspace's), with none of the outer build's flags.
pub fn misbehave_guest() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-guests");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--profile",
                "guest",
                "--target",
                "wasm32-wasip2",
            ])
            .args(["-p", "wasmconfd-test-guest-misbehave", "--target-dir"])
            .arg(&target)
            .current_dir(repo())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cannot run cargo to build the test guest");
        assert!(status.success(), "building the misbehave test guest failed");
        std::fs::read(target.join("wasm32-wasip2/guest/wasmconfd_test_guest_misbehave.wasm"))
            .unwrap()
    })
}
