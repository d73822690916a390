//! `wasmconfd render` as a user runs it: golden cases, the example cluster, hostile input,
//! broken guests, and a large cluster, each checked by the real HAProxy.

mod common;

use common::{haproxy_check, misbehave_guest, repo, run, wasmconfd};
use std::path::{Path, PathBuf};

/// Each `tests/cases/<name>/` holds `cluster.yaml`, `expected.cfg`, the expected `maps/`, and
/// optionally `settings` (one GUEST.KEY=VALUE a line). The render must match byte for byte and
/// HAProxy must accept the expected configuration. `UPDATE_GOLDEN=1` rewrites the expectations.
#[test]
fn golden_cases() {
    let cases = repo().join("tests/cases");
    let mut seen = 0;
    for entry in std::fs::read_dir(&cases).unwrap() {
        let case = entry.unwrap().path();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = tempfile::tempdir().unwrap();
        let mut command = wasmconfd();
        command
            .arg("render")
            .arg("--cluster")
            .arg(case.join("cluster.yaml"));
        command.arg("--output").arg(out.path().join("haproxy.cfg"));
        if let Ok(settings) = std::fs::read_to_string(case.join("settings")) {
            for line in settings.lines().filter(|l| !l.trim().is_empty()) {
                command.args(["--set", line]);
            }
        }
        let (ok, _, stderr) = run(&mut command);
        assert!(ok, "case {name}: render failed:\n{stderr}");

        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let _ = std::fs::remove_dir_all(case.join("maps"));
            copy_dir(out.path(), &case);
            std::fs::rename(case.join("haproxy.cfg"), case.join("expected.cfg")).unwrap();
        }
        let expected = std::fs::read_to_string(case.join("expected.cfg")).unwrap();
        let actual = std::fs::read_to_string(out.path().join("haproxy.cfg")).unwrap();
        assert_eq!(
            actual, expected,
            "case {name}: configuration differs from expected.cfg"
        );
        assert_eq!(
            listing(&out.path().join("maps")),
            listing(&case.join("maps")),
            "case {name}: map files differ"
        );

        let (valid, output) = haproxy_check(&case.join("expected.cfg"));
        assert!(
            valid,
            "case {name}: haproxy -c rejects expected.cfg:\n{output}"
        );
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected at least 3 golden cases in {}, found {seen}",
        cases.display()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        // The record of files, and the certificates: a new default one each render.
        if [".wasmconfd-files", "certs"].map(std::ffi::OsStr::new)[..]
            .contains(&path.file_name().unwrap())
        {
            continue;
        }
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// (file name, contents) of every file in `dir` but wasmconfd's record of them, sorted.
fn listing(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.file_name().unwrap() != ".wasmconfd-files")
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_example_cluster_renders_to_stdout_and_passes_the_check() {
    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--check", "--cluster"])
        .arg(repo().join("examples/cluster.yaml")));
    assert!(ok, "{stderr}");
    for backend in [
        "backend http_shop_web",
        "backend https_shop_api",
        "listen redis_data_cache",
        "backend http_legacy_blog",
        "backend http_legacy_wiki",
    ] {
        assert!(
            stdout.contains(backend),
            "missing `{backend}` in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("10.244.3.13"),
        "an unready endpoint became a server"
    );
    assert!(
        !stdout.contains("kube-dns"),
        "an unannotated service was rendered"
    );
    assert!(stderr.contains("passed `haproxy -c -f`"), "{stderr}");
    assert!(
        stderr.contains(
            "proto paths, which no guest serves (the guests serve: http, https, redis), is the \
             proto of tools/api, tools/api-v2, tools/grafana, tools/scratch, tools/wiki: not routed"
        ),
        "the example guest's services are named once, with their proto:\n{stderr}"
    );
}

#[test]
fn hostile_objects_are_skipped_by_name_and_the_rest_renders() {
    let case = repo().join("tests/cases/hostile/cluster.yaml");
    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--check", "--cluster"])
        .arg(&case));
    assert!(ok, "{stderr}");
    for object in [
        "Service evil/domain-newline",
        "Service evil/domain-space",
        "Service evil/domain-hash",
        "Service evil/domain-quotes",
        "Service evil/domain-env",
        "Service evil/domain-unicode",
        "Service evil/domain-empty",
        "Service evil/proto-newline",
        "Service evil/proto-space",
        "Service evil/proto-empty",
        "Service evil/hijacker",
        "Service evil/no-ports",
        "Service evil/bad-port",
        "Service evil/port-typo",
        "Service evil/star",
        "Service evil/redis-80",
        "Service evil/forged\\n\\u{1b}[31mERROR",
        "EndpointSlice good/evil-port-zero",
        "EndpointSlice good/evil-newline",
        "EndpointSlice good/evil-hostname",
        "EndpointSlice good/evil-brackets",
        "EndpointSlice good/evil-port",
        "EndpointSlice good/evil-fd",
        "EndpointSlice good/evil-env",
        "EndpointSlice good/evil-empty",
        "EndpointSlice good/evil-unspecified",
        "EndpointSlice good/evil-metadata",
        "EndpointSlice good/evil-loopback",
        "EndpointSlice good/evil-node",
        "EndpointSlice good/evil-zone",
        "EndpointSlice good/evil-pod",
    ] {
        let line = stderr.lines().find(|l| l.contains(object));
        assert!(
            line.is_some_and(|l| l.contains("WARN")),
            "no warning naming {object}:\n{stderr}"
        );
    }
    assert!(
        stdout.contains("backend http_good_web"),
        "the valid service is missing:\n{stdout}"
    );
    // The service whose slices carried the hostile fields keeps its one valid endpoint.
    assert!(
        stdout.contains(
            "backend http_good_api\n    mode http\n    server 10.0.0.2:8080 10.0.0.2:8080 check\n\n"
        ),
        "good/api must keep exactly its valid endpoint:\n{stdout}"
    );
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains("forged\n"),
        "a name forged a log line:\n{stderr}"
    );
    assert!(
        stdout.contains("backend http_legacy_empty\n"),
        "the Endpoints with empty subsets is missing"
    );
    assert!(
        !stdout.contains("evil"),
        "a hostile object reached the configuration:\n{stdout}"
    );
}

#[test]
fn a_failing_check_exits_non_zero_with_haproxys_message_and_the_guest_that_wrote_the_line() {
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(
        guests.path().join("50-broken.conf"),
        "backend broken\n    no-such-keyword here\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("haproxy.cfg");
    let (ok, _, stderr) = run(wasmconfd()
        .args(["render", "--check", "--cluster"])
        .arg(repo().join("examples/cluster.yaml"))
        .arg("--guests")
        .arg(guests.path())
        .arg("--output")
        .arg(&target));
    assert!(!ok, "a rejected configuration must fail the command");
    assert!(
        stderr.contains("no-such-keyword"),
        "HAProxy's message is missing:\n{stderr}"
    );
    assert!(
        stderr.contains("written by static file 50-broken"),
        "the origin is missing:\n{stderr}"
    );
    assert!(!target.exists(), "a rejected configuration was written");
}

/// `--output` names the configuration file; a directory is refused at once, saying so.
#[test]
fn an_output_that_is_a_directory_is_refused_naming_the_file_to_give() {
    let out = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(repo().join("examples/cluster.yaml"))
        .arg("--output")
        .arg(out.path()));
    assert!(!ok);
    let file = out.path().join("haproxy.cfg");
    assert!(
        stderr.contains(&format!(
            "is a directory: name the configuration file itself, such as {}",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_panicking_guest_fails_the_render_with_its_name() {
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(guests.path().join("50-misbehave.wasm"), misbehave_guest()).unwrap();
    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(repo().join("examples/cluster.yaml"))
        .arg("--guests")
        .arg(guests.path())
        .args(["--set", "misbehave.mode=panic"]));
    assert!(!ok);
    assert!(stdout.is_empty(), "a partial configuration was printed");
    assert!(stderr.contains("guest misbehave crashed"), "{stderr}");
}

/// A guest that says which annotations and labels it reads receives those and no other, and
/// one that reads no endpoint details receives each endpoint's address without them, and one
/// that reads no ports receives the service without its ports.
#[test]
fn a_guest_receives_only_the_annotations_labels_endpoint_details_and_ports_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  \
         annotations:\n    wasmconfd.io/domain: shop.example.com\n    wasmconfd.io/proto: http\n    \
         misbehave.wasmconfd.io/note: hello\n    meta.helm.sh/release-name: web\n  \
         labels:\n    tier: front\n    app: web\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nmetadata:\n  \
         name: web-1\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: web\n\
         ports:\n- port: 8080\nendpoints:\n- addresses: [10.0.0.1]\n  nodeName: node-1\n  \
         zone: zone-a\n  targetRef: {kind: Pod, namespace: shop, name: web-1}\n",
    )
    .unwrap();
    let guests = dir.path().join("guests");
    std::fs::create_dir(&guests).unwrap();
    std::fs::write(guests.join("50-misbehave.wasm"), misbehave_guest()).unwrap();
    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(&cluster)
        .arg("--guests")
        .arg(&guests)
        .args(["--set", "misbehave.mode=seen"]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "describe web 'ports=0 port=-' \
             annotations=misbehave.wasmconfd.io/note,wasmconfd.io/domain labels=tier \
             'endpoint=10.0.0.1 ports=0 node= zone= pod='\n"
        ),
        "{stdout}"
    );
}

#[test]
fn a_guest_dir_replaces_disables_and_extends_the_bundled_parts_in_numeric_order() {
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(guests.path().join("30-https.conf"), "").unwrap();
    std::fs::write(guests.path().join("10-extra.conf"), "# ten\n").unwrap();
    std::fs::write(guests.path().join("9-extra.conf"), "# nine\n").unwrap();
    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(repo().join("examples/cluster.yaml"))
        .arg("--guests")
        .arg(guests.path()));
    assert!(ok, "{stderr}");
    assert!(
        !stdout.contains("frontend https"),
        "an empty 30-https.conf must disable the https guest"
    );
    let (nine, ten, http) = (
        stdout.find("# nine").unwrap(),
        stdout.find("# ten").unwrap(),
        stdout.find("frontend http").unwrap(),
    );
    assert!(
        nine < ten && ten < http,
        "order must be 9-extra, 10-extra, 20-http"
    );
}

#[test]
fn settings_for_an_unknown_guest_are_refused() {
    let (ok, _, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(repo().join("examples/cluster.yaml"))
        .args(["--set", "htpp.bind=:8080"]));
    assert!(!ok);
    assert!(
        stderr.contains("htpp") && stderr.contains("http, https"),
        "{stderr}"
    );
}

#[test]
fn a_setting_a_guest_does_not_read_is_refused_naming_what_it_reads() {
    for (setting, known) in [
        ("http.bnd=:8080", "it reads: bind, frontend"),
        ("base.admin-sock=none", "admin-socket"),
    ] {
        let (ok, _, stderr) = run(wasmconfd()
            .args(["render", "--cluster"])
            .arg(repo().join("examples/cluster.yaml"))
            .args(["--set", setting]));
        let key = setting
            .split_once('.')
            .unwrap()
            .1
            .split_once('=')
            .unwrap()
            .0;
        assert!(!ok, "{setting} was accepted");
        assert!(
            stderr.contains(&format!("setting {key} given for guest")) && stderr.contains(known),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_file_is_named_with_its_error_once() {
    for (flag, what) in [
        ("--cluster", "cannot read snapshot"),
        ("--guests", "cannot read guest directory"),
        ("--guests-config", "cannot read guests configuration"),
    ] {
        let mut command = wasmconfd();
        command.arg("render").args([flag, "/nonexistent"]);
        if flag != "--cluster" {
            command
                .arg("--cluster")
                .arg(repo().join("examples/cluster.yaml"));
        }
        let (ok, _, stderr) = run(&mut command);
        assert!(!ok);
        assert!(
            stderr.contains(&format!("{what} /nonexistent: No such file")),
            "{stderr}"
        );
        assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    }
    let (ok, _, stderr) = run(wasmconfd().args(["render", "--cluster", "/"]));
    assert!(!ok);
    assert!(
        stderr.contains("cannot read snapshot /: is a directory"),
        "{stderr}"
    );
}

#[test]
fn flags_also_read_environment_variables() {
    let (ok, stdout, stderr) = run(wasmconfd()
        .arg("render")
        .env("WASMCONFD_CLUSTER", repo().join("examples/cluster.yaml"))
        .env(
            "WASMCONFD_SET",
            "http.bind=127.0.0.1:8080;redis.bind-address=127.0.0.1",
        ));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("bind 127.0.0.1:8080\n") && stdout.contains("bind 127.0.0.1:6379\n"),
        "{stdout}"
    );
}

/// `--version` names the commit the binary was built from, so a bug report can say which.
#[test]
fn the_version_names_the_commit() {
    let (ok, stdout, stderr) = run(wasmconfd().arg("--version"));
    assert!(ok, "{stderr}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(head.status.success(), "the tests run in a git checkout");
    let head = String::from_utf8(head.stdout).unwrap();
    let expected = format!(
        "wasmconfd {} ({})\n",
        env!("CARGO_PKG_VERSION"),
        head.trim()
    );
    assert_eq!(stdout, expected);
}

/// The bash completion script loads in bash and completes subcommands.
#[test]
fn the_bash_completion_completes_subcommands() {
    let (ok, script, stderr) = run(wasmconfd().args(["completions", "bash"]));
    assert!(ok, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmconfd.bash");
    std::fs::write(&file, script).unwrap();
    let (ok, completed, stderr) = run(std::process::Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(wasmconfd guest ca); COMP_CWORD=2; \
         _wasmconfd wasmconfd ca guest; echo \"${{COMPREPLY[@]}}\"",
        file.display()
    )));
    assert!(ok, "{stderr}");
    assert_eq!(completed.trim(), "cache");
}

/// The manual pages, one per command, read with `man`: the page of `run` has its flags.
#[test]
fn the_manual_pages_read_with_man() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(wasmconfd().args(["man", "--dir"]).arg(dir.path()));
    assert!(ok, "{stderr}");
    let (ok, page, stderr) = run(std::process::Command::new("man")
        .arg("-l")
        .arg(dir.path().join("wasmconfd-run.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat"));
    assert!(ok, "{stderr}");
    assert!(
        page.contains("wasmconfd-run") && page.contains("--reload-method"),
        "{page}"
    );
    assert!(dir.path().join("wasmconfd-guest-cache-prune.1").exists());
}

/// 10,000 http services with 3 endpoints each render and pass `haproxy -c`.
#[test]
fn ten_thousand_services_render_and_pass_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..10_000 {
        let (a, b) = (i / 250, i % 250);
        yaml.push_str(&format!(
            "- apiVersion: v1\n  kind: Service\n  metadata:\n    name: svc-{i}\n    namespace: bulk\n    \
             annotations: {{wasmconfd.io/domain: svc-{i}.example.com, wasmconfd.io/proto: http}}\n  \
             spec: {{ports: [{{name: http, port: 80}}]}}\n\
             - apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  addressType: IPv4\n  metadata:\n    \
             name: svc-{i}-x\n    namespace: bulk\n    labels: {{kubernetes.io/service-name: svc-{i}}}\n  \
             ports: [{{name: http, port: 8080}}]\n  endpoints:\n  - addresses: [10.1.{a}.{b}]\n  \
             - addresses: [10.2.{a}.{b}]\n  - addresses: [10.3.{a}.{b}]\n"
        ));
    }
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, yaml).unwrap();
    let target = dir.path().join("haproxy.cfg");
    let (ok, _, stderr) = run(wasmconfd()
        .args(["render", "--check", "--cluster"])
        .arg(&cluster)
        .arg("--output")
        .arg(&target));
    assert!(ok, "{stderr}");
    let config = std::fs::read_to_string(&target).unwrap();
    assert_eq!(config.matches("\nbackend http_bulk_svc-").count(), 10_000);
    assert_eq!(config.matches("\n    server ").count(), 30_000);
    let hosts = std::fs::read_to_string(dir.path().join("maps/http-hosts.map")).unwrap();
    assert_eq!(hosts.lines().count(), 10_000);
}

/// Precompiled guests are native code: one runs only when this node's key authenticates it for
/// its component. A compiled file swapped for another guest's is compiled again, and the guest
/// that runs is the right one; a key others could change is not used.
/// `guest cache prune` removes the compiled guests no start loaded lately, and keeps those a
/// render loads, however old their files: loading one marks it used.
#[test]
fn pruning_the_cache_keeps_the_guests_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let render = || {
        run(wasmconfd()
            .args(["render", "--cluster"])
            .arg(repo().join("examples/cluster.yaml"))
            .arg("--cache-dir")
            .arg(&cache))
    };
    let compiled = || -> Vec<_> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    };
    let (ok, _, stderr) = render();
    assert!(ok, "{stderr}");
    let in_use = compiled();
    assert_eq!(in_use.len(), 4, "base, http, https and redis");
    let dead = cache.join(format!("{}-0.cwasm", "0".repeat(64)));
    std::fs::write(&dead, vec![0; 1024 * 1024]).unwrap();
    let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    for file in in_use.iter().chain([&dead]) {
        let file = std::fs::File::options().write(true).open(file).unwrap();
        file.set_modified(month_ago).unwrap();
    }
    let (ok, _, stderr) = render();
    assert!(ok && !stderr.contains("compiling guest"), "{stderr}");

    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["guest", "cache", "prune", "--cache-dir"])
        .arg(&cache));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("unused for 7days: 1 compiled guests (1.0 MiB)"),
        "{stdout}"
    );
    assert!(!dead.exists());
    assert_eq!(compiled().len(), 4);
    let (ok, _, stderr) = render();
    assert!(ok && !stderr.contains("compiling guest"), "{stderr}");
}

#[test]
fn a_swapped_precompiled_guest_is_compiled_again_and_the_right_guest_runs() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let render = || {
        run(wasmconfd()
            .args(["render", "--cluster"])
            .arg(repo().join("examples/cluster.yaml"))
            .env("WASMCONFD_CACHE_DIR", &cache))
    };
    let (ok, first, stderr) = render();
    assert!(ok, "{stderr}");
    let compiled = |guest: &str| {
        let wasm = std::fs::read(repo().join(format!("host/guests/{guest}.wasm"))).unwrap();
        let digest = wasmconfd::guests::oci::digest_of(&wasm);
        let prefix = digest.trim_start_matches("sha256:");
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no compiled {guest} guest in {}", cache.display()))
    };
    std::fs::copy(compiled("redis"), compiled("http")).unwrap();
    let (ok, second, stderr) = render();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("not authenticated by this node's key"),
        "{stderr}"
    );
    assert_eq!(second, first, "another guest's code ran in the http slot");

    let key = dir.path().join("compiled.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, third, stderr) = render();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("others may read or change the key"),
        "{stderr}"
    );
    assert_eq!(third, first);
}

/// A guest's output cannot make the host do unbounded work: a render that returns more map
/// files than allowed fails with the guest's name, and logging is cut off after 1 MiB.
#[test]
fn a_guest_cannot_make_the_host_write_or_log_without_bound() {
    let guests = tempfile::tempdir().unwrap();
    std::fs::write(guests.path().join("50-misbehave.wasm"), misbehave_guest()).unwrap();
    let render = |mode: &str| {
        run(wasmconfd()
            .args(["render", "--cluster"])
            .arg(repo().join("examples/cluster.yaml"))
            .arg("--guests")
            .arg(guests.path())
            .args(["--set", &format!("misbehave.mode={mode}")]))
    };
    let (ok, stdout, stderr) = render("maps");
    assert!(!ok && stdout.is_empty());
    assert!(
        stderr.contains(
            "guest misbehave returned 101 map files, more than the 100 one render may return"
        ),
        "{stderr}"
    );

    let (ok, _, stderr) = render("log");
    assert!(ok, "{}", &stderr[stderr.len().saturating_sub(2000)..]);
    assert_eq!(
        stderr
            .matches("logged more than 1048576 bytes in one render")
            .count(),
        1,
        "{}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    assert!(stderr.len() < 1_300_000, "{} bytes of log", stderr.len());
}

/// `wasmconfd man | head` ends quietly when `head` stops reading, as other commands do.
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // A pipe whose reader is already gone: every write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = wasmconfd().arg("man").stdout(writer).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// A snapshot of http services in namespace `t`, each with one ready endpoint (on 10.x: for
/// rendering only), annotated `apart.wasmconfd.io/servers` with the given value when there is
/// one.
fn apart_cluster(services: &[(&str, Option<&str>)]) -> String {
    let mut items = Vec::new();
    for (i, (name, told)) in services.iter().enumerate() {
        let mut annotations = serde_json::json!({
            "wasmconfd.io/domain": format!("{name}.test"),
            "wasmconfd.io/proto": "http",
        });
        if let Some(told) = told {
            annotations["apart.wasmconfd.io/servers"] = (*told).into();
        }
        items.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "t", "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }));
        items.push(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": format!("{name}-x"), "namespace": "t",
                         "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [format!("10.0.{}.{}", i / 250, i % 250 + 1)],
                           "conditions": {"ready": true}}],
        }));
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// A guest directory in `dir` with the `apart` test guest in the http guest's place.
fn apart_guests(dir: &Path) -> PathBuf {
    let guests = dir.join("guests");
    std::fs::create_dir(&guests).unwrap();
    std::fs::write(guests.join("20-http.conf"), "").unwrap();
    std::fs::write(guests.join("25-apart.wasm"), common::apart_guest()).unwrap();
    guests
}

#[test]
fn a_service_whose_servers_the_guest_gets_wrong_is_quarantined_and_the_others_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let guests = apart_guests(dir.path());
    let cluster = dir.path().join("cluster.json");
    let told = ["newline", "bind", "elsewhere", "panic"];
    let mut services = vec![("shop", None), ("cart", None)];
    services.extend(told.iter().map(|t| (*t, Some(*t))));
    std::fs::write(&cluster, apart_cluster(&services)).unwrap();

    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--check", "--cluster"])
        .arg(&cluster)
        .arg("--guests")
        .arg(&guests));
    assert!(ok, "{stderr}");
    // Each good service has its server, in its own backend.
    for (name, address) in [("shop", "10.0.0.1"), ("cart", "10.0.0.2")] {
        let backend = format!("backend apart_t_{name}\n    mode http\n    server {address}:8080 ");
        assert!(
            stdout.contains(&backend),
            "{backend:?} is missing:\n{stdout}"
        );
    }
    // Each bad one is named with why, keeps its backend, and has no server.
    for (name, why) in [
        ("newline", "control character"),
        ("bind", "`bind` where only `server` lines go"),
        (
            "elsewhere",
            "for section nowhere, which its render does not have",
        ),
        ("panic", "apart was told to panic in servers"),
    ] {
        let quarantined = stderr
            .lines()
            .find(|l| l.contains("quarantined") && l.contains(&format!("t/{name}")));
        assert!(
            quarantined.is_some_and(|l| l.contains(why)),
            "t/{name} is not quarantined for {why:?}:\n{stderr}"
        );
        let backend = format!("backend apart_t_{name}\n    mode http\n");
        assert!(
            stdout.contains(&backend),
            "{backend:?} is missing:\n{stdout}"
        );
        let after = &stdout[stdout.find(&backend).unwrap() + backend.len()..];
        assert!(
            !after.starts_with("    server"),
            "t/{name} has servers:\n{stdout}"
        );
    }
    assert!(!stdout.contains("frontend evil") && !stdout.contains("bind :1"));
}

#[test]
fn among_thousands_of_services_those_the_guest_fails_on_lose_their_servers_and_no_other() {
    // The guest is asked for servers a thousand services at a time: a bad service in the
    // second thousand and one in the third fail their parts, which are asked again service by
    // service. Every other service, in those parts or not, keeps its server.
    let dir = tempfile::tempdir().unwrap();
    let guests = apart_guests(dir.path());
    let names: Vec<String> = (0..2500).map(|i| format!("s{i:04}")).collect();
    let bad = [(1500, "panic"), (2400, "bind")];
    let services: Vec<(&str, Option<&str>)> = (names.iter().enumerate())
        .map(|(i, name)| {
            (
                name.as_str(),
                bad.iter().find(|(b, _)| *b == i).map(|(_, t)| *t),
            )
        })
        .collect();
    let cluster = dir.path().join("cluster.json");
    std::fs::write(&cluster, apart_cluster(&services)).unwrap();

    let (ok, stdout, stderr) = run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(&cluster)
        .arg("--guests")
        .arg(&guests));
    assert!(ok, "{stderr}");
    for (i, name) in names.iter().enumerate() {
        let backend = format!("backend apart_t_{name}\n    mode http\n");
        let Some(at) = stdout.find(&backend) else {
            panic!("{backend:?} is missing");
        };
        let server = format!("    server 10.0.{}.{}:8080 ", i / 250, i % 250 + 1);
        let has_server = stdout[at + backend.len()..].starts_with(&server);
        let quarantined = (stderr.lines()).any(|l| l.contains("quarantined") && l.contains(name));
        match bad.iter().find(|(b, _)| *b == i) {
            None => assert!(has_server && !quarantined, "t/{name} has no server"),
            Some((_, told)) => assert!(
                !has_server && quarantined,
                "t/{name}, told to {told}, is not quarantined"
            ),
        }
    }
}
