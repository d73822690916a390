//! The test registry itself: HTTPS that only its CA vouches for, and basic auth.

use std::process::Command;
use test_registry::{PASSWORD, Registry, USER};

/// `curl` on the registry's `/v2/` with `args`: (exit code, HTTP status).
fn v2(registry: &Registry, args: &[&str]) -> (i32, String) {
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .arg(format!("https://{}/v2/", registry.host()))
        .output()
        .expect("curl is needed for this test");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_registry_serves_https_from_its_own_ca_and_requires_a_password() {
    let mut registry = Registry::start();
    let ca = registry.ca();
    let ca = ca.to_str().unwrap();
    assert_eq!(v2(&registry, &["--cacert", ca]), (0, "401".into()));
    let credentials = format!("{USER}:{PASSWORD}");
    assert_eq!(
        v2(&registry, &["--cacert", ca, "-u", &credentials]),
        (0, "200".into())
    );
    let (code, _) = v2(&registry, &["-u", &credentials]);
    assert_eq!(code, 60, "without the CA the certificate is not trusted");
    assert_eq!(
        v2(&registry, &["--cacert", ca, "-u", &format!("{USER}:wrong")]),
        (0, "401".into())
    );

    registry.stop();
    let (code, _) = v2(&registry, &["--cacert", ca]);
    assert_eq!(code, 7, "a stopped registry refuses connections");
}
