//! The files in `deploy/`, as their own tools check them: the Kubernetes manifests as the
//! k8s-openapi types they claim to be (no field unknown to them), `systemd-analyze verify` for
//! the unit, the first start's render of an empty cluster through HAProxy's drop-in (checked by
//! HAProxy), `keepalived --config-test`, and `promtool` for the alert rules.

mod common;

use common::{backend, free_port, haproxy_check, repo, run};
use std::path::Path;
use std::process::Command;

/// `deploy/NAME` with `from` replaced by `to`, written into `dir`.
fn copy_with(dir: &Path, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("deploy").join(name)).unwrap();
    assert!(text.contains(from), "{name} has no {from}");
    let path = dir.join(Path::new(name).file_name().unwrap());
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_wasmconfd");
    let unit = copy_with(
        dir.path(),
        "systemd/wasmconfd.service",
        "/usr/bin/wasmconfd",
        binary,
    );
    let verify = |unit: &Path| run(Command::new("systemd-analyze").arg("verify").arg(unit));
    let (ok, stdout, stderr) = verify(&unit);
    assert!(
        ok && stdout.is_empty() && stderr.is_empty(),
        "{stdout}{stderr}"
    );

    // The same check speaks up about a directive systemd does not know.
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, text.replace("ProtectClock=", "ProtectClocks=")).unwrap();
    let (_, stdout, stderr) = verify(&unit);
    assert!(stderr.contains("ProtectClocks") || stdout.contains("ProtectClocks"));
}

/// HAProxy's drop-in renders the configuration of an empty cluster on the first start, with the
/// settings of the environment file; HAProxy accepts it, and the admin socket is the haproxy
/// group's.
#[test]
fn the_first_start_renders_a_configuration_haproxy_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmconfd/haproxy.cfg");
    let dropin =
        std::fs::read_to_string(repo().join("deploy/systemd/haproxy.service.d/wasmconfd.conf"))
            .unwrap();
    let command = dropin
        .lines()
        .find_map(|line| line.strip_prefix("ExecStartPre=/bin/sh -c '"))
        .and_then(|rest| rest.strip_suffix('\''))
        .expect("an ExecStartPre through sh -c")
        .replace("/usr/bin/wasmconfd", env!("CARGO_BIN_EXE_wasmconfd"));
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(&command).env("CONFIG", &config);
    let env = std::fs::read_to_string(repo().join("deploy/systemd/wasmconfd.env")).unwrap();
    for line in env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (key, value) = line.split_once('=').unwrap();
        shell.env(key, value);
    }
    let (ok, _, stderr) = run(&mut shell);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("stats socket /run/haproxy/admin.sock mode 660 level admin group haproxy"),
        "{text}"
    );
    let (valid, output) = haproxy_check(&config);
    assert!(valid, "{output}");

    // A second start leaves what wasmconfd wrote since.
    std::fs::write(&config, "# written by wasmconfd run\n").unwrap();
    let (ok, _, stderr) = run(&mut shell);
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# written by wasmconfd run\n"
    );
}

/// keepalived accepts the pair's configuration. keepalived 2.2.7 ends a config test that
/// tracks a script by sending itself SIGTERM (seen in this sandbox); what tells a good file from
/// a bad one is that it says nothing, as a broken copy shows.
#[test]
fn the_keepalived_configuration_passes_its_config_test() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let script = repo().join("deploy/keepalived/check_haproxy.sh");
    let config = copy_with(
        dir.path(),
        "keepalived/keepalived.conf",
        "/etc/keepalived/check_haproxy.sh",
        script.to_str().unwrap(),
    );
    let test = |config: &Path| {
        Command::new("keepalived")
            .arg("--config-test")
            .arg("-f")
            .arg(config)
            .output()
            .expect("keepalived is installed (scripts/setup.sh)")
    };
    let output = test(&config);
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let status = output.status;
    assert!(
        said.is_empty() && (status.success() || status.signal() == Some(15)),
        "{status}: {said}"
    );

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("virtual_router_id 51", "virtual_router_id 300"),
    )
    .unwrap();
    let output = test(&config);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("virtual_router_id") || said.contains("300"),
        "{said}"
    );
}

/// The check keepalived runs follows whether HAProxy answers HTTP, whatever the answer.
#[test]
fn the_keepalived_check_follows_whether_http_is_served() {
    let check = |port: u16| {
        Command::new(repo().join("deploy/keepalived/check_haproxy.sh"))
            .env("HAPROXY_CHECK_URL", format!("http://127.0.0.1:{port}/"))
            .status()
            .unwrap()
            .success()
    };
    assert!(check(backend("serving")));
    assert!(!check(free_port()));
}

/// The alert rules are valid, and each fires on the series that should raise it, after its
/// `for`, and not on a healthy node (`deploy/monitoring/alerts.test.yaml`).
#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("deploy/monitoring");
    for args in [
        &["check", "rules", "alerts.yaml"][..],
        &["test", "rules", "alerts.test.yaml"][..],
    ] {
        let (ok, stdout, stderr) = run(Command::new("promtool").args(args).current_dir(&dir));
        assert!(
            ok && stdout.contains("SUCCESS"),
            "promtool {args:?}:\n{stdout}{stderr}"
        );
    }
}

/// `value`, read as the Kubernetes type `T` and written back: equal when `T` knows every field.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &serde_json::Value,
) -> serde_json::Value {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"));
    serde_json::to_value(typed).unwrap()
}

/// Every manifest under `deploy/kubernetes` is the Kubernetes object its `kind` says, with no
/// field that type does not know (a misspelt field would be silently dropped by the API server);
/// every kustomization names files and directories that exist.
#[test]
fn the_kubernetes_manifests_are_the_objects_they_claim_to_be() {
    use k8s_openapi::api::{apps, core, policy, rbac};
    use serde::Deserialize;
    let mut kinds = Vec::new();
    let mut dirs = vec![repo().join("deploy/kubernetes")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::Value::deserialize(doc).unwrap();
                let kind = value["kind"].as_str().unwrap().to_string();
                let back = match kind.as_str() {
                    "Kustomization" => {
                        for resource in value["resources"].as_array().unwrap() {
                            let target = path.parent().unwrap().join(resource.as_str().unwrap());
                            assert!(target.exists(), "{}: {resource}", path.display());
                        }
                        continue;
                    }
                    "Namespace" => round_trip::<core::v1::Namespace>(&value),
                    "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(&value),
                    "ConfigMap" => round_trip::<core::v1::ConfigMap>(&value),
                    "Service" => round_trip::<core::v1::Service>(&value),
                    "ClusterRole" => round_trip::<rbac::v1::ClusterRole>(&value),
                    "ClusterRoleBinding" => round_trip::<rbac::v1::ClusterRoleBinding>(&value),
                    "DaemonSet" => round_trip::<apps::v1::DaemonSet>(&value),
                    "Deployment" => round_trip::<apps::v1::Deployment>(&value),
                    "PodDisruptionBudget" => round_trip::<policy::v1::PodDisruptionBudget>(&value),
                    other => panic!("{}: no test knows kind {other}", path.display()),
                };
                assert_eq!(back, value, "{}: {kind}", path.display());
                kinds.push(kind);
            }
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
}

/// The image CI builds without pulling a base image (`scripts/build-image.py`, the equivalent
/// of `deploy/image/Containerfile`) goes into Debian's docker-registry under its version tags,
/// comes back by tag with every digest checked, and runs from its own filesystem (a chroot, as
/// its unprivileged user, with the environment its configuration gives): `--version`, and a
/// render of the example cluster that its own HAProxy checks.
#[test]
fn the_image_goes_through_a_registry_and_runs_wasmconfd_and_its_haproxy() {
    use sha2::Digest as _;
    let registry = test_registry::Registry::start();
    let repository = format!("{}/wasmconfd", registry.host());
    let (ok, out, stderr) = run(Command::new("python3")
        .arg(repo().join("scripts/build-image.py"))
        .args(["--binary", env!("CARGO_BIN_EXE_wasmconfd")])
        .args(["--push", &repository, "--user", test_registry::USER])
        .arg("--ca")
        .arg(registry.ca())
        .env("REGISTRY_PASSWORD", test_registry::PASSWORD));
    assert!(ok, "{stderr}");
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(pushed["tags"][0], version);
    assert!(
        pushed["tags"][1]
            .as_str()
            .unwrap()
            .starts_with(&format!("{version}-"))
    );

    let dir = tempfile::tempdir().unwrap();
    let get = |path: &str, accept: &str, file: &Path| {
        let url = format!("https://{}/v2/wasmconfd/{path}", registry.host());
        let user = format!("{}:{}", test_registry::USER, test_registry::PASSWORD);
        let (ok, _, stderr) = run(Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(registry.ca())
            .args(["-u", &user, "-H", &format!("Accept: {accept}"), "-o"])
            .arg(file)
            .arg(&url));
        assert!(ok, "{url}: {stderr}");
        let bytes = std::fs::read(file).unwrap();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        (bytes, digest)
    };
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let (manifest, digest) = get(
        &format!("manifests/{version}"),
        manifest_type,
        &dir.path().join("manifest"),
    );
    assert_eq!(digest, pushed["digest"].as_str().unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blob = |key: &serde_json::Value, name: &str| {
        let wanted = key["digest"].as_str().unwrap();
        let (bytes, digest) = get(&format!("blobs/{wanted}"), "*/*", &dir.path().join(name));
        assert_eq!(digest, wanted);
        bytes
    };
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&manifest["config"], "config")).unwrap();
    assert_eq!(config["config"]["User"], "99:99");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/wasmconfd");
    assert!(config["config"]["Volumes"]["/var/cache"].is_object());
    blob(&manifest["layers"][0], "layer.tar.gz");

    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let (ok, _, stderr) = run(Command::new("tar")
        .arg("xzf")
        .arg(dir.path().join("layer.tar.gz"))
        .arg("-C")
        .arg(&root)
        .arg("--same-owner"));
    assert!(ok, "{stderr}");
    std::fs::copy(
        repo().join("examples/cluster.yaml"),
        root.join("tmp/cluster.yaml"),
    )
    .unwrap();
    let env: Vec<_> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    // The image's own files, environment and user, with the host's /dev as a container runtime
    // gives one (without root: in a user namespace, where the only user is root).
    let in_image = |args: &[&str]| {
        let root_user = rustix::process::geteuid().is_root();
        let (namespace, user): (&[&str], &str) = if root_user {
            (&["--mount"], "--userspec=99:99")
        } else {
            (&["--mount", "--map-root-user"], "--userspec=0:0")
        };
        let mut command = Command::new("unshare");
        command
            .args(namespace)
            .args([
                "sh",
                "-c",
                "mount --rbind /dev \"$0/dev\" && exec chroot \"$@\"",
            ])
            .arg(&root)
            .arg(user)
            .arg(&root)
            .env_clear()
            .envs(env.iter().filter_map(|e| e.split_once('=')))
            .args(args);
        run(&mut command)
    };
    let (ok, out, stderr) = in_image(&["/usr/bin/wasmconfd", "--version"]);
    assert!(ok, "{stderr}");
    assert!(out.starts_with(&format!("wasmconfd {version} (")), "{out}");
    let (ok, _, stderr) = in_image(&[
        "/usr/bin/wasmconfd",
        "render",
        "--check",
        "--cluster",
        "/tmp/cluster.yaml",
        "--output",
        "/tmp/out/haproxy.cfg",
    ]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("not cached"), "the cache works: {stderr}");
    let config = std::fs::read_to_string(root.join("tmp/out/haproxy.cfg")).unwrap();
    assert!(config.contains("backend http_shop_web"), "{config}");
}

/// The Grafana dashboard asks only for metrics wasmconfd exports, in PromQL that Prometheus
/// reads (each query checked by `promtool` as a recording rule), with every panel placed.
#[test]
fn the_dashboard_queries_metrics_wasmconfd_exports_in_valid_promql() {
    let text = std::fs::read_to_string(repo().join("deploy/monitoring/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exported = wasmconfd::status::Status::default().metrics();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{title}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("wasmconfd_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&format!("# TYPE {name} ")),
                    "{title}: {name} is not a metric wasmconfd exports"
                );
            }
            let expr = expr.replace("$instance", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:query_{queries}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} queries");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let (ok, out, stderr) = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file));
    assert!(ok, "{out}{stderr}");
}

/// The Debian package (`scripts/build-deb.sh`) holds what a HAProxy host needs, as Debian
/// expects it: the binary that runs, the unit and HAProxy's drop-in that systemd accepts, the
/// settings as a configuration file dpkg keeps, manual pages, completions, and the scripts that
/// make the user; it depends on HAProxy.
#[test]
fn the_debian_package_installs_what_a_haproxy_host_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, stderr) = run(Command::new(repo().join("scripts/build-deb.sh"))
        .arg(env!("CARGO_BIN_EXE_wasmconfd"))
        .arg(dir.path()));
    assert!(ok, "{stderr}");
    let package = Path::new(out.trim());
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        package.ends_with(format!("wasmconfd_{version}_amd64.deb")),
        "{}",
        package.display()
    );
    let field = |name: &str| {
        let (ok, out, stderr) = run(Command::new("dpkg-deb")
            .arg("--field")
            .arg(package)
            .arg(name));
        assert!(ok, "{stderr}");
        out.trim().to_string()
    };
    assert_eq!(field("Package"), "wasmconfd");
    assert_eq!(field("Version"), version);
    assert!(field("Depends").contains("haproxy (>= 2.6)"));

    let root = dir.path().join("root");
    let (ok, _, stderr) = run(Command::new("dpkg-deb").arg("-x").arg(package).arg(&root));
    assert!(ok, "{stderr}");
    let control = dir.path().join("control");
    let (ok, _, stderr) = run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(package)
        .arg(&control));
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/default/wasmconfd\n"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system --ingroup haproxy"),
        "{postinst}"
    );
    let (ok, _, stderr) = run(Command::new("sh").arg("-n").arg(control.join("postinst")));
    assert!(ok, "postinst: {stderr}");

    let (ok, out, _) = run(Command::new(root.join("usr/bin/wasmconfd")).arg("--version"));
    assert!(
        ok && out.starts_with(&format!("wasmconfd {version}")),
        "{out}"
    );
    for file in [
        "lib/systemd/system/wasmconfd.service",
        "lib/systemd/system/haproxy.service.d/wasmconfd.conf",
        "etc/default/wasmconfd",
        "usr/share/man/man1/wasmconfd.1.gz",
        "usr/share/man/man1/wasmconfd-run.1.gz",
        "usr/share/bash-completion/completions/wasmconfd",
        "usr/share/zsh/vendor-completions/_wasmconfd",
        "usr/share/fish/vendor_completions.d/wasmconfd.fish",
        "usr/share/doc/wasmconfd/copyright",
    ] {
        assert!(root.join(file).is_file(), "{file}");
    }
    // The unit as installed, with the binary where it says.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/wasmconfd.service")).unwrap();
    let unit = unit.replace(
        "/usr/bin/wasmconfd",
        root.join("usr/bin/wasmconfd").to_str().unwrap(),
    );
    let checked = dir.path().join("wasmconfd.service");
    std::fs::write(&checked, unit).unwrap();
    let (ok, out, stderr) = run(Command::new("systemd-analyze").arg("verify").arg(&checked));
    assert!(ok && out.is_empty() && stderr.is_empty(), "{out}{stderr}");
}
