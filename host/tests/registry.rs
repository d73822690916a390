//! Guests in an OCI registry, against Debian's docker-registry with TLS from a throwaway CA and
//! basic auth: push, pull by tag and by digest, and what is refused.

mod common;

use common::{repo, run, wasmconfd};
use std::path::Path;
use test_registry::{PASSWORD, Registry, USER};

/// `wasmconfd guest ARGS... --registry-ca CA` with the registry's credentials.
fn guest(registry: &Registry, args: &[&str]) -> (bool, String, String) {
    run(wasmconfd()
        .arg("guest")
        .args(args)
        .arg("--registry-ca")
        .arg(registry.ca())
        .env("WASMCONFD_REGISTRY_USER", USER)
        .env("WASMCONFD_REGISTRY_PASSWORD", PASSWORD))
}

fn bundled_http() -> std::path::PathBuf {
    repo().join("host/guests/http.wasm")
}

#[test]
fn a_pushed_guest_pulls_back_by_tag_and_by_digest_with_its_digests_checked() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled_http();
    let (ok, pushed, stderr) = guest(&registry, &["push", http.to_str().unwrap(), &reference]);
    assert!(ok, "{stderr}\n{}", registry.log());
    let pinned = pushed.trim();
    assert!(
        pinned.starts_with(&format!("{reference}@sha256:")),
        "{pinned}"
    );

    for by in [reference.as_str(), pinned] {
        let out = dir.path().join("pulled.wasm");
        let (ok, said, stderr) = guest(&registry, &["pull", by, "--output", out.to_str().unwrap()]);
        assert!(ok, "{stderr}");
        assert_eq!(said.trim(), pinned, "pull names what it pulled, pinned");
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&http).unwrap());
    }

    // The component in the registry's storage is rewritten: the pull is refused.
    let layer = wasmconfd::oci::digest_of(&std::fs::read(&http).unwrap());
    let stored = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let out = dir.path().join("tampered.wasm");
    let (ok, _, stderr) = guest(
        &registry,
        &["pull", pinned, "--output", out.to_str().unwrap()],
    );
    assert!(!ok, "a tampered component must be refused");
    assert!(
        stderr.contains("cannot pull the component of") && stderr.contains("Invalid digest"),
        "{stderr}"
    );
    assert!(!Path::new(&out).exists(), "nothing is written");
}

#[test]
fn a_wrong_password_or_an_untrusted_certificate_is_a_clear_error() {
    let registry = Registry::start();
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled_http();
    let (ok, _, stderr) = run(wasmconfd()
        .args(["guest", "push", http.to_str().unwrap(), &reference])
        .arg("--registry-ca")
        .arg(registry.ca())
        .args(["--registry-user", USER, "--registry-password", "wrong"]));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot push to {reference}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("check --registry-user and --registry-password"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(wasmconfd().args(["guest", "pull", &reference]).args([
        "--registry-user",
        USER,
        "--registry-password",
        PASSWORD,
    ]));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot resolve {reference}")),
        "{stderr}"
    );
    assert!(stderr.contains("pass --registry-ca FILE"), "{stderr}");
}
