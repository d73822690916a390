//! Reading the cluster from a (fake) Kubernetes API server with the real kube client:
//! `wasmconfd snapshot` over HTTP and HTTPS with a client certificate, failing over between API
//! servers, and never hanging on one that does not answer.

mod common;

use common::{repo, run, wasmconfd};
use fake_apiserver::{FakeApi, Fault};
use std::process::Command;
use std::time::{Duration, Instant};

/// A fake API server holding every object of the example cluster.
fn example_api(api: FakeApi) -> FakeApi {
    let text = std::fs::read_to_string(repo().join("examples/cluster.yaml")).unwrap();
    let list: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    api.apply_all(list);
    api
}

/// Render `cluster` with the bundled guests.
fn render(cluster: &std::path::Path) -> String {
    let (ok, stdout, stderr) = run(wasmconfd().arg("render").arg("--cluster").arg(cluster));
    assert!(ok, "{stderr}");
    stdout
}

fn snapshot(api_servers: &str) -> Command {
    let mut command = wasmconfd();
    command.args([
        "snapshot",
        "--legacy-endpoints",
        "--api-servers",
        api_servers,
    ]);
    command
}

#[test]
fn a_snapshot_renders_exactly_like_the_cluster_it_was_taken_from() {
    let api = example_api(FakeApi::start());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.yaml");
    let (ok, _, stderr) = run(snapshot(&api.url()).arg("--output").arg(&file));
    assert!(ok, "{stderr}");
    assert_eq!(render(&file), render(&repo().join("examples/cluster.yaml")));
    assert_eq!(
        api.lists(),
        3,
        "one list each of services, endpointslices and endpoints"
    );

    // Without --legacy-endpoints, the python-confd style services (annotated Endpoints) are not read.
    let (ok, stdout, stderr) = run(wasmconfd().args(["snapshot", "--api-servers", &api.url()]));
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("kind: Endpoints\n"), "{stdout}");
}

#[test]
fn namespace_and_label_filters_are_applied() {
    let api = example_api(FakeApi::start());
    let (ok, stdout, stderr) = run(snapshot(&api.url()).args(["--namespace", "shop"]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("namespace: shop") && !stdout.contains("namespace: data"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run(snapshot(&api.url()).args(["--selector", "team=payments"]));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("kind: Service\n").count(), 1, "{stdout}");
    assert!(stdout.contains("name: admin"), "{stdout}");
}

#[test]
fn https_with_a_client_certificate() {
    let api = example_api(FakeApi::start_tls());
    let files = api.client_files().unwrap().clone();
    let (ok, stdout, stderr) = run(snapshot(&api.url())
        .arg("--ssl-ca")
        .arg(&files.ca)
        .arg("--ssl-cert")
        .arg(&files.cert)
        .arg("--ssl-key")
        .arg(&files.key));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name: web"), "{stdout}");

    // Without a client certificate the server refuses the connection.
    let (ok, _, stderr) = run(snapshot(&api.url()).arg("--ssl-ca").arg(&files.ca));
    assert!(!ok);
    assert!(
        stderr.contains("no API server could be read") && stderr.contains(&api.url()),
        "{stderr}"
    );
}

#[test]
fn a_dead_or_silent_first_api_server_fails_over_to_the_next() {
    let api = example_api(FakeApi::start());
    let mut dead = FakeApi::start();
    dead.stop();
    let silent = FakeApi::start();
    silent.set_fault(Fault::Hang);

    let servers = format!("{},{},{}", dead.url(), silent.url(), api.url());
    let started = Instant::now();
    let (ok, stdout, stderr) = run(snapshot(&servers).args(["--api-timeout", "1s"]));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name: web"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&dead.url()) && stderr.contains(&silent.url()),
        "each failure is logged:\n{stderr}"
    );
}

#[test]
fn no_answering_api_server_is_a_clear_error() {
    let garbage = FakeApi::start();
    garbage.set_fault(Fault::Garbage);
    let failing = FakeApi::start();
    failing.set_fault(Fault::Status500);
    let (ok, stdout, stderr) = run(
        snapshot(&format!("{},{}", garbage.url(), failing.url())).args(["--api-timeout", "2s"])
    );
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("no API server could be read")
            && stderr.contains(&garbage.url())
            && stderr.contains(&failing.url()),
        "{stderr}"
    );
}

/// python-confd's APISERVERS were often written without a scheme: a clear error that says
/// what to write, not a crash inside the Kubernetes client.
#[test]
fn an_api_server_without_a_scheme_is_a_clear_error() {
    let (ok, _, stderr) = run(&mut snapshot("10.0.0.1:6443"));
    assert!(!ok);
    assert!(
        stderr.contains("API server \"10.0.0.1:6443\" is not a URL")
            && stderr.contains("https://10.0.0.1:6443")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `deploy/kubernetes/rbac.yaml` parses as the Kubernetes objects it claims to be, and grants exactly
/// get/list/watch on what wasmconfd reads.
#[test]
fn the_rbac_manifest_grants_read_access_to_what_wasmconfd_watches_and_events() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use serde::Deserialize;
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/rbac.yaml")).unwrap();
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "ClusterRole")
        .unwrap();
    let role: ClusterRole = serde_json::from_value(role).unwrap();
    let mut granted = Vec::new();
    for rule in role.rules.unwrap() {
        let events = rule.api_groups.as_deref() == Some(&["events.k8s.io".to_string()]);
        let verbs: &[&str] = if events {
            &["create", "patch"]
        } else {
            &["get", "list", "watch"]
        };
        assert_eq!(rule.verbs, verbs, "read-only, but for publishing Events");
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                granted.push(format!("{group}/{resource}"));
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "/endpoints",
            "/namespaces",
            "/services",
            "discovery.k8s.io/endpointslices",
            "events.k8s.io/events"
        ]
    );
}

#[test]
fn a_bearer_token_is_sent_and_a_missing_one_is_refused() {
    let api = example_api(FakeApi::start());
    api.require_token("s3cret");
    let (ok, stdout, stderr) = run(snapshot(&api.url()).args(["--token", "s3cret"]));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name: web"));
    let (ok, _, stderr) = run(&mut snapshot(&api.url()));
    assert!(!ok);
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("401"),
        "{stderr}"
    );
}

/// A token file as `kubectl create token ... > file` writes it, with a final line break, is
/// read as kubectl reads it; a missing one is named.
#[test]
fn a_token_file_is_read_without_its_line_break() {
    let api = example_api(FakeApi::start());
    api.require_token("s3cret");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let (ok, stdout, stderr) = run(snapshot(&api.url()).arg("--token-file").arg(&file));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name: web"));

    let missing = dir.path().join("nothing-here");
    let (ok, _, stderr) = run(snapshot(&api.url()).arg("--token-file").arg(&missing));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot read the token file {}", missing.display())),
        "{stderr}"
    );
}

#[test]
fn a_kubeconfig_and_its_context_are_used() {
    let api = example_api(FakeApi::start());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: wrong\n\
             clusters:\n- name: fake\n  cluster: {{server: '{}'}}\n- name: nowhere\n  cluster: {{server: 'http://127.0.0.1:1'}}\n\
             contexts:\n- name: right\n  context: {{cluster: fake, user: me}}\n- name: wrong\n  context: {{cluster: nowhere, user: me}}\n\
             users:\n- name: me\n  user: {{token: s3cret}}\n",
            api.url()
        ),
    )
    .unwrap();
    api.require_token("s3cret");
    let (ok, stdout, stderr) = run(wasmconfd()
        .arg("snapshot")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--context", "right"]));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name: web"));
    // The same file through KUBECONFIG, with its current (wrong) context: a clear failure.
    let (ok, _, stderr) = run(wasmconfd()
        .arg("snapshot")
        .env("KUBECONFIG", &kubeconfig)
        .args(["--api-timeout", "2s"]));
    assert!(!ok);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

/// `snapshot --with-namespaces` saves the Namespace objects, and a render of it gives a scope
/// that selects namespaces by label the services of those namespaces only; without them, the
/// render says why the guest receives nothing.
#[test]
fn namespaces_selected_by_label_come_from_the_snapshot() {
    let api = example_api(FakeApi::start());
    for (name, team) in [("shop", "web"), ("legacy", "other")] {
        api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": name, "labels": {"team": team}}}));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guests.yaml");
    std::fs::write(
        &config,
        "guests:\n  http:\n    namespace-labels: {team: web}\n",
    )
    .unwrap();
    let render_with = |file: &std::path::Path| {
        run(wasmconfd()
            .args(["render", "--cluster"])
            .arg(file)
            .arg("--guests-config")
            .arg(&config))
    };

    let with = dir.path().join("with.yaml");
    let (ok, _, stderr) = run(snapshot(&api.url())
        .arg("--with-namespaces")
        .arg("--output")
        .arg(&with));
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&with)
            .unwrap()
            .matches("kind: Namespace\n")
            .count(),
        2
    );
    let (ok, text, stderr) = render_with(&with);
    assert!(ok, "{stderr}");
    assert!(text.contains("backend http_shop_web"), "{text}");
    assert!(!text.contains("backend http_legacy_blog"), "{text}");

    let without = dir.path().join("without.yaml");
    let (ok, _, stderr) = run(snapshot(&api.url()).arg("--output").arg(&without));
    assert!(ok, "{stderr}");
    let (ok, text, stderr) = render_with(&without);
    assert!(ok, "{stderr}");
    assert!(!text.contains("backend http_shop_web"), "{text}");
    assert!(
        stderr.contains("the snapshot has no Namespace objects"),
        "{stderr}"
    );
}

/// A snapshot holds TLS Secrets only with `--include-secrets`, and then only those of type
/// `kubernetes.io/tls`; a render of it terminates TLS with their certificates, which HAProxy
/// accepts, writes the keys for HAProxy alone, and shows guests no key.
#[test]
fn tls_secrets_are_in_a_snapshot_only_when_asked_and_no_guest_sees_a_key() {
    let api = example_api(FakeApi::start());
    let ca = fake_apiserver::TestCa::new();
    api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "pay", "namespace": "shop", "annotations": {
            "wasmconfd.io/proto": "https", "wasmconfd.io/domain": "pay.example.com",
            "wasmconfd.io/tls-secret": "pay-tls", "wasmconfd.io/port": "http"}},
        "spec": {"ports": [{"name": "http", "port": 80}]}}));
    api.apply(ca.secret("shop", "pay-tls", &["pay.example.com"], 7));
    api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "db-password", "namespace": "shop"}, "data": {"password": "aHVudGVyMg=="}}));
    let dir = tempfile::tempdir().unwrap();

    let (ok, without, stderr) = run(&mut snapshot(&api.url()));
    assert!(ok, "{stderr}");
    assert!(!without.contains("kind: Secret"), "{without}");
    assert!(stderr.contains("--include-secrets"), "{stderr}");
    let (ok, _, stderr) = run(snapshot(&api.url()).args(["--tls-secret-selector", "a=b"]));
    assert!(!ok && stderr.contains("add --include-secrets"), "{stderr}");

    let with = dir.path().join("with.yaml");
    let (ok, _, stderr) = run(snapshot(&api.url())
        .arg("--include-secrets")
        .arg("--output")
        .arg(&with));
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&with).unwrap();
    assert_eq!(text.matches("kind: Secret").count(), 1, "only the TLS one");
    assert!(!text.contains("db-password"), "{text}");

    let out = dir.path().join("out");
    let (ok, _, stderr) = run(wasmconfd()
        .args(["render", "--check", "--cluster"])
        .arg(&with)
        .arg("--output")
        .arg(out.join("haproxy.cfg")));
    assert!(ok, "{stderr}");
    let config = std::fs::read_to_string(out.join("haproxy.cfg")).unwrap();
    assert!(
        config.contains("crt certs/default.pem crt-list certs/certificates.crtlist"),
        "{config}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("certs/certificates.crtlist")).unwrap(),
        "certs/shop_pay-tls.pem pay.example.com\n"
    );
    use std::os::unix::fs::PermissionsExt as _;
    for file in ["shop_pay-tls.pem", "default.pem"] {
        let mode = std::fs::metadata(out.join("certs").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // A guest that fails when anything in its input looks like a private key.
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(
        guests.path().join("50-keys.wasm"),
        common::misbehave_guest(),
    )
    .unwrap();
    let (ok, config, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(&with)
        .arg("--guests")
        .arg(guests.path())
        .args(["--set", "keys.mode=keys"]));
    assert!(ok, "{stderr}");
    assert!(
        config.contains("describe certificates=1 pay.example.com"),
        "{config}"
    );
}
