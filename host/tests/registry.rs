//! Guests in an OCI registry, against Debian's docker-registry with TLS from a throwaway CA and
//! basic auth: push, sign, verify, pull by tag and by digest, and what is refused: a tampered
//! blob, unsigned, a wrong key, a tag moved after signing, a signature copied from another
//! digest, wrong or missing credentials, an untrusted certificate, a missing tag, nothing
//! listening, a plain-HTTP server.

mod common;

use common::{backend, free_port, repo, run, wasmconfd};
use std::path::{Path, PathBuf};
use std::process::Command;
use test_registry::{Behaviour, Misbehaving, PASSWORD, Registry, USER};

/// `wasmconfd guest ARGS... --registry-ca CA` with the registry's credentials.
fn guest(registry: &Registry, args: &[&str]) -> (bool, String, String) {
    guest_with_ca(&registry.ca(), args)
}

/// Like [`guest`], with the CA file of a registry that may be gone.
fn guest_with_ca(ca: &Path, args: &[&str]) -> (bool, String, String) {
    run(wasmconfd()
        .arg("guest")
        .args(args)
        .arg("--registry-ca")
        .arg(ca)
        .env("WASMCONFD_REGISTRY_USER", USER)
        .env("WASMCONFD_REGISTRY_PASSWORD", PASSWORD))
}

fn bundled(name: &str) -> PathBuf {
    repo().join(format!("host/guests/{name}.wasm"))
}

/// An ECDSA P-256 key pair made by openssl: (private key, public key) PEM files in `dir`.
fn key_pair(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl").args(args).status().unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    let (key, public) = (key.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key,
    ]);
    openssl(&["ec", "-in", key, "-pubout", "-out", public]);
    (key.to_string(), public.to_string())
}

/// Push `file` to `reference` and sign it with `key`: the pinned reference.
fn push_and_sign(registry: &Registry, file: &Path, reference: &str, key: &str) -> String {
    let (ok, pushed, stderr) = guest(registry, &["push", file.to_str().unwrap(), reference]);
    assert!(ok, "{stderr}\n{}", registry.log());
    let pinned = pushed.trim().to_string();
    let (ok, signed, stderr) = guest(registry, &["sign", "--signing-key", key, reference]);
    assert!(ok, "{stderr}");
    assert_eq!(signed.trim(), format!("signed {pinned}"));
    pinned
}

/// `curl ARGS...` against the registry with its CA and credentials, for what wasmconfd does not
/// do: its stdout.
fn curl(registry: &Registry, args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sSf", "--cacert", registry.ca().to_str().unwrap()])
        .args(["-u", &format!("{USER}:{PASSWORD}")])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn manifest_url(registry: &Registry, repository: &str, tag: &str) -> String {
    format!(
        "https://{}/v2/{repository}/manifests/{tag}",
        registry.host()
    )
}

fn get_manifest(registry: &Registry, repository: &str, tag: &str) -> Vec<u8> {
    curl(
        registry,
        &[
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &manifest_url(registry, repository, tag),
        ],
    )
}

fn put_manifest(registry: &Registry, repository: &str, tag: &str, manifest: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    curl(
        registry,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", file.path().display()),
            &manifest_url(registry, repository, tag),
        ],
    );
}

#[test]
fn a_signed_guest_pulls_back_by_tag_and_by_digest_and_a_tampered_one_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled("http");
    let pinned = push_and_sign(&registry, &http, &reference, &key);
    assert!(
        pinned.starts_with(&format!("{reference}@sha256:")),
        "{pinned}"
    );

    for by in [reference.as_str(), pinned.as_str()] {
        let out = dir.path().join("pulled.wasm");
        let out = out.to_str().unwrap();
        let (ok, said, stderr) = guest(
            &registry,
            &["pull", by, "--trusted-key", &public, "--output", out],
        );
        assert!(ok, "{stderr}");
        assert_eq!(said.trim(), pinned, "pull names what it pulled, pinned");
        assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&http).unwrap());
    }

    // The component in the registry's storage is rewritten: a pull that downloads it (with an
    // empty cache) is refused.
    let layer = wasmconfd::guests::oci::digest_of(&std::fs::read(&http).unwrap());
    let stored = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let out = dir.path().join("tampered.wasm");
    let (ok, _, stderr) = guest(
        &registry,
        &[
            "pull",
            &pinned,
            "--trusted-key",
            &public,
            "--cache-dir",
            dir.path().join("empty-cache").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(!ok, "a tampered component must be refused");
    assert!(
        stderr.contains("cannot pull the component of") && stderr.contains("Invalid digest"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn unsigned_wrong_key_moved_tag_and_copied_signature_are_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let signed = push_and_sign(&registry, &bundled("http"), &reference, &key);
    let verify =
        |reference: &str, key: &str| guest(&registry, &["verify", reference, "--key", key]);

    let (ok, said, stderr) = verify(&reference, &public);
    assert!(ok, "{stderr}");
    assert_eq!(
        said.trim(),
        format!("verified {signed} (signed by {public})")
    );

    let (ok, _, stderr) = verify(&reference, &stranger);
    assert!(!ok);
    assert!(
        stderr.contains("signed, but by none of the trusted keys"),
        "{stderr}"
    );

    // Key rotation: a second signature with a new key, beside the first; either key verifies.
    let (next_key, next_public) = key_pair(dir.path(), "next");
    let (ok, _, stderr) = guest(&registry, &["sign", "--key", &next_key, &reference]);
    assert!(ok, "{stderr}");
    for trusted in [&public, &next_public] {
        let (ok, said, stderr) = verify(&reference, trusted);
        assert!(ok, "{stderr}");
        assert!(
            said.ends_with(&format!("(signed by {trusted})\n")),
            "{said}"
        );
    }

    // Unsigned: refused unless explicitly allowed.
    let unsigned = format!("oci://{}/team/https:v1", registry.host());
    let (ok, _, stderr) = guest(
        &registry,
        &["push", bundled("https").to_str().unwrap(), &unsigned],
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = guest(&registry, &["pull", &unsigned, "--trusted-key", &public]);
    assert!(!ok);
    assert!(
        stderr.contains("is not signed") && stderr.contains("guest sign"),
        "{stderr}"
    );
    let (ok, _, stderr) = guest(
        &registry,
        &[
            "pull",
            &unsigned,
            "--trusted-key",
            &public,
            "--insecure-allow-unsigned",
        ],
    );
    assert!(
        ok && stderr.contains("--insecure-allow-unsigned"),
        "{stderr}"
    );

    // The tag moves to another component after signing: what it names now is unsigned.
    let (ok, moved, stderr) = guest(
        &registry,
        &["push", bundled("redis").to_str().unwrap(), &reference],
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = verify(&reference, &public);
    assert!(!ok);
    assert!(stderr.contains("is not signed"), "{stderr}");

    // The old signature is copied under the new digest's signature tag: still refused.
    let signature_tag = |pinned: &str| {
        let digest = pinned.rsplit_once('@').unwrap().1;
        format!("{}.sig", digest.replace(':', "-"))
    };
    let copied = get_manifest(&registry, "team/http", &signature_tag(&signed));
    put_manifest(
        &registry,
        "team/http",
        &signature_tag(moved.trim()),
        &copied,
    );
    let (ok, _, stderr) = verify(&reference, &public);
    assert!(!ok);
    assert!(stderr.contains("are for another artifact"), "{stderr}");
}

/// A valid signature made in one repository, copied with its digest into another, does not
/// make the other one trusted (cosign's identity check: the payload names the repository); a
/// reference with `..` in its path is refused before anything is fetched.
#[test]
fn a_signature_copied_from_another_repository_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let marker = format!("oci://{}/team/marker:v1", registry.host());
    let signed = push_and_sign(&registry, &bundled("http"), &marker, &key);
    // The same component in team/good has the same digest; its signature tag gets a copy of
    // team/marker's signature, with the blobs it names mounted across.
    let good = format!("oci://{}/team/good:v1", registry.host());
    let (ok, _, stderr) = guest(
        &registry,
        &["push", bundled("http").to_str().unwrap(), &good],
    );
    assert!(ok, "{stderr}");
    let digest = signed.rsplit_once('@').unwrap().1;
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let copied = get_manifest(&registry, "team/marker", &tag);
    let manifest: serde_json::Value = serde_json::from_slice(&copied).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    for blob in layers.iter().chain([&manifest["config"]]) {
        let url = format!(
            "https://{}/v2/team/good/blobs/uploads/?mount={}&from=team/marker",
            registry.host(),
            blob["digest"].as_str().unwrap()
        );
        curl(&registry, &["-X", "POST", &url]);
    }
    put_manifest(&registry, "team/good", &tag, &copied);

    let (ok, _, stderr) = guest(&registry, &["verify", &good, "--key", &public]);
    assert!(!ok, "a signature from team/marker made team/good trusted");
    assert!(
        stderr.contains(&format!(
            "were made for another repository ({}/team/marker)",
            registry.host()
        )),
        "{stderr}"
    );
    let (ok, _, stderr) = guest(&registry, &["verify", &marker, "--key", &public]);
    assert!(ok, "{stderr}");

    let traversal = format!("oci://{}/../../v2/team/good:v1", registry.host());
    let (ok, _, stderr) = guest(&registry, &["verify", &traversal, "--key", &public]);
    assert!(
        !ok && stderr.contains("is not a guest reference"),
        "{stderr}"
    );
}

/// An artifact as oci-client and Kubewarden push it (config `vnd.wasm.config.v1+json`, layer
/// `vnd.wasm.content.layer.v1+wasm`) pulls like one of ours; an image that is not Wasm does not.
#[test]
fn the_older_wasm_layer_type_pulls_and_other_layers_are_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let http = bundled("http");
    let ours = format!("oci://{}/team/http:v1", registry.host());
    push_and_sign(&registry, &http, &ours, &key);
    let manifest = String::from_utf8(get_manifest(&registry, "team/http", "v1")).unwrap();
    let retyped = |layer: &str| {
        manifest
            .replace(
                "application/vnd.wasm.config.v0+json",
                "application/vnd.wasm.config.v1+json",
            )
            .replace("\"application/wasm\"", &format!("\"{layer}\""))
    };
    let pull = |tag: &str| {
        let reference = format!("oci://{}/team/http:{tag}", registry.host());
        let out = dir.path().join(format!("{tag}.wasm"));
        let (ok, _, stderr) = guest(&registry, &["sign", "--key", &key, &reference]);
        assert!(ok, "{stderr}");
        let (ok, _, stderr) = guest(
            &registry,
            &[
                "pull",
                &reference,
                "--trusted-key",
                &public,
                "--cache-dir",
                dir.path().join("cache").to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        );
        (ok, stderr, std::fs::read(out).ok())
    };

    let older = retyped("application/vnd.wasm.content.layer.v1+wasm");
    assert_ne!(older, manifest);
    put_manifest(&registry, "team/http", "older", older.as_bytes());
    let (ok, stderr, pulled) = pull("older");
    assert!(ok, "{stderr}");
    assert_eq!(pulled.unwrap(), std::fs::read(&http).unwrap());

    let image = retyped("application/vnd.oci.image.layer.v1.tar+gzip");
    put_manifest(&registry, "team/http", "image", image.as_bytes());
    let (ok, stderr, pulled) = pull("image");
    assert!(!ok && pulled.is_none());
    assert!(
        stderr.contains(
            "is not a Wasm artifact: its layer is application/vnd.oci.image.layer.v1.tar+gzip"
        ),
        "{stderr}"
    );
}

#[test]
fn a_wrong_password_or_an_untrusted_certificate_is_a_clear_error() {
    let registry = Registry::start();
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled("http");
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
    assert!(
        stderr.contains("certificate is not trusted") && stderr.contains("pass --registry-ca FILE"),
        "{stderr}"
    );

    // No credentials at all, where the registry asks for them.
    let (ok, _, stderr) = run(wasmconfd()
        .args(["guest", "push", http.to_str().unwrap(), &reference])
        .arg("--registry-ca")
        .arg(registry.ca()));
    assert!(!ok);
    assert!(
        stderr.contains("asks for credentials and none were given: pass --registry-user"),
        "{stderr}"
    );

    // A tag that was never pushed.
    let missing = reference.replace(":v1", ":v9");
    let (ok, _, stderr) = guest(&registry, &["pull", &missing, "--insecure-allow-unsigned"]);
    assert!(!ok);
    assert!(
        stderr.contains("has no such tag or repository") && !stderr.contains("envelope"),
        "{stderr}"
    );
}

/// The password can come from standard input, so it never shows in the process list; a user
/// without any password is refused before anything is sent.
#[test]
fn the_registry_password_can_come_from_stdin() {
    use std::io::Write as _;
    let registry = Registry::start();
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled("http");
    let push = || {
        let mut command = wasmconfd();
        command
            .args(["guest", "push", http.to_str().unwrap(), &reference])
            .arg("--registry-ca")
            .arg(registry.ca())
            .args(["--registry-user", USER]);
        command
    };
    let mut child = push()
        .arg("--registry-password-stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("@sha256:"));

    let (ok, _, stderr) = run(&mut push());
    assert!(!ok);
    assert!(
        stderr.contains("--registry-user needs a password: --registry-password-stdin"),
        "{stderr}"
    );
}

/// Where nothing listens, the error says so; where a plain-HTTP server answers (here a test
/// backend), it names --plain-http-registry, not the CA.
#[test]
fn an_unreachable_or_plain_http_registry_is_named_for_what_it_is() {
    let http = bundled("http");
    let push = |host: String| {
        run(wasmconfd().args([
            "guest",
            "push",
            http.to_str().unwrap(),
            &format!("oci://{host}/team/http:v1"),
        ]))
    };
    let nobody = format!("127.0.0.1:{}", free_port());
    let (ok, _, stderr) = push(nobody.clone());
    assert!(!ok);
    assert!(
        stderr.contains(&format!("nothing accepts connections at {nobody}")),
        "{stderr}"
    );

    let plain = format!("127.0.0.1:{}", backend("plain"));
    let (ok, _, stderr) = push(plain.clone());
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{plain} does not answer in TLS"))
            && stderr.contains(&format!("pass --plain-http-registry {plain}"))
            && !stderr.contains("--registry-ca"),
        "{stderr}"
    );
}

#[test]
fn with_the_registry_down_a_warm_cache_still_serves_verified_guests_and_a_cold_one_cannot() {
    let mut registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled("http");
    let pinned = push_and_sign(&registry, &http, &reference, &key);
    let (warm, cold) = (dir.path().join("warm"), dir.path().join("cold"));
    let ca = registry.ca();
    let pull = |cache: &Path, key: &str| {
        let out = dir.path().join("pulled.wasm");
        let _ = std::fs::remove_file(&out);
        let result = guest_with_ca(
            &ca,
            &[
                "pull",
                &reference,
                "--trusted-key",
                key,
                "--cache-dir",
                cache.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        );
        (result, std::fs::read(&out).ok())
    };
    let ((ok, _, stderr), _) = pull(&warm, &public);
    assert!(ok, "{stderr}");

    registry.stop();
    let ((ok, said, stderr), pulled) = pull(&warm, &public);
    assert!(ok, "{stderr}");
    assert_eq!(said.trim(), pinned);
    assert!(stderr.contains("using the cached copy"), "{stderr}");
    assert_eq!(pulled.unwrap(), std::fs::read(&http).unwrap());

    let ((ok, _, stderr), _) = pull(&warm, &stranger);
    assert!(!ok, "the cached signature is checked again");
    assert!(stderr.contains("not by a trusted key"), "{stderr}");

    let ((ok, _, stderr), pulled) = pull(&cold, &public);
    assert!(!ok && pulled.is_none());
    assert!(
        stderr.contains(&format!("cannot resolve {reference}"))
            && stderr.contains("and no cached copy to use instead"),
        "{stderr}"
    );
}

/// Whoever can write the cache cannot make an unsigned guest run: a record pointed at another
/// cached component, a record copied from another guest, and a component replaced with
/// another's are each refused or ignored, with the registry down; the guest that loads is the
/// signed one or none.
#[test]
fn a_tampered_cache_never_runs_what_was_not_signed_for_the_reference() {
    let mut registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let host = registry.host();
    let (http_ref, redis_ref) = (
        format!("oci://{host}/team/http:v1"),
        format!("oci://{host}/team/redis:v1"),
    );
    push_and_sign(&registry, &bundled("http"), &http_ref, &key);
    push_and_sign(&registry, &bundled("redis"), &redis_ref, &key);
    let cache = dir.path().join("cache");
    let ca = registry.ca();
    let pull = |reference: &str| {
        let out = dir.path().join("pulled.wasm");
        let _ = std::fs::remove_file(&out);
        let (ok, _, stderr) = guest_with_ca(
            &ca,
            &[
                "pull",
                reference,
                "--trusted-key",
                &public,
                "--cache-dir",
                cache.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        );
        (ok, stderr, std::fs::read(&out).ok())
    };
    for reference in [&http_ref, &redis_ref] {
        let (ok, stderr, _) = pull(reference);
        assert!(ok, "{stderr}");
    }
    registry.stop();
    let http = std::fs::read(bundled("http")).unwrap();
    let redis = std::fs::read(bundled("redis")).unwrap();
    let record = |reference: &str| {
        let key = wasmconfd::guests::oci::digest_of(reference.as_bytes());
        cache
            .join("oci/refs")
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    };
    let original = std::fs::read(record(&redis_ref)).unwrap();

    // The record names another cached component: the record names nothing that runs.
    let mut edited: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edited["component"] = serde_json::json!(wasmconfd::guests::oci::digest_of(&http));
    std::fs::write(record(&redis_ref), edited.to_string()).unwrap();
    let (ok, stderr, pulled) = pull(&redis_ref);
    assert!(ok, "{stderr}");
    assert!(
        pulled.unwrap() == redis,
        "a cache record chose the component"
    );

    // The record of another guest copied over this one's: signed for another repository.
    std::fs::copy(record(&http_ref), record(&redis_ref)).unwrap();
    let (ok, stderr, pulled) = pull(&redis_ref);
    assert!(!ok && pulled.is_none(), "another guest's record loaded");
    assert!(stderr.contains("made for another repository"), "{stderr}");

    // The component replaced by another guest's: it no longer has the signed digest.
    std::fs::write(record(&redis_ref), &original).unwrap();
    let blob = cache
        .join("oci/blobs/sha256")
        .join(wasmconfd::guests::oci::digest_of(&redis).trim_start_matches("sha256:"));
    std::fs::write(&blob, &http).unwrap();
    let (ok, stderr, pulled) = pull(&redis_ref);
    assert!(!ok && pulled.is_none(), "a swapped component loaded");
    assert!(
        stderr.contains("cached component is missing or damaged"),
        "{stderr}"
    );
}

/// A registry that never answers, sends bytes without end (for a component, a manifest or the
/// signatures), or names a huge component: each is cut off in time or in size with an error
/// that says so, and a warm cache still starts.
#[test]
fn a_misbehaving_registry_is_cut_off_in_time_and_in_size() {
    let registry = Misbehaving::start(std::fs::read(bundled("http")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("oci://{}/team/guest:v1", registry.host());
    let render = |cache: &str| {
        let started = std::time::Instant::now();
        let result = run(wasmconfd()
            .args(["render", "--cluster"])
            .arg(repo().join("examples/cluster.yaml"))
            .arg(format!("--guest=20-http={reference}"))
            .args(["--insecure-allow-unsigned", "--registry-timeout", "2s"])
            .args(["--plain-http-registry", &registry.host()])
            .arg("--cache-dir")
            .arg(dir.path().join(cache)));
        (result, started.elapsed())
    };
    let ((ok, config, stderr), _) = render("warm");
    assert!(ok, "{stderr}");
    assert!(config.contains("# --- guest 20-http (oci://"), "{config}");

    registry.set(Behaviour::Hang);
    let ((ok, again, stderr), took) = render("warm");
    assert!(ok, "{stderr}");
    assert_eq!(again, config);
    assert!(
        stderr.contains("did not finish within 2s") && stderr.contains("using the cached copy"),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let ((ok, _, stderr), took) = render("cold");
    assert!(
        !ok && stderr.contains("did not finish within 2s"),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");

    registry.set(Behaviour::EndlessBlob);
    let before = registry.sent();
    let ((ok, _, stderr), _) = render("cold");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("sent more than the") && stderr.contains("cut off and refused"),
        "{stderr}"
    );
    let sent = registry.sent() - before;
    assert!(sent < 64 << 20, "{sent} bytes were taken before refusing");

    for (behaviour, what) in [
        (Behaviour::EndlessManifest, "manifest"),
        (Behaviour::EndlessSignature, "signatures"),
    ] {
        registry.set(behaviour);
        let before = registry.sent();
        let ((ok, _, stderr), _) = render("cold");
        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains("more than 4194304 bytes") && stderr.contains("cut off and refused"),
            "endless {what}: {stderr}"
        );
        let sent = registry.sent() - before;
        assert!(
            sent < 64 << 20,
            "{sent} bytes of {what} were taken before refusing"
        );
    }

    registry.set(Behaviour::HugeManifestSize);
    let before = registry.sent();
    let ((ok, _, stderr), _) = render("cold");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("more than the 67108864 allowed")
            && stderr.contains("--max-guest-size-mib"),
        "{stderr}"
    );
    assert_eq!(registry.sent(), before, "nothing is downloaded");
}

/// `wasmconfd render` of the example cluster with `args`, the registry's credentials, its CA
/// (whether or not it still runs) and an OCI cache in `cache`.
fn render_example(ca: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    run(wasmconfd()
        .args(["render", "--cluster"])
        .arg(repo().join("examples/cluster.yaml"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--registry-ca")
        .arg(ca)
        .env("WASMCONFD_REGISTRY_USER", USER)
        .env("WASMCONFD_REGISTRY_PASSWORD", PASSWORD))
}

/// `render` with a signed guest from the registry in a slot: here the http guest, replacing the
/// bundled one.
#[test]
fn render_loads_a_signed_guest_from_the_registry_into_its_slot() {
    let mut registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let pinned = push_and_sign(&registry, &bundled("http"), &reference, &key);
    let cache = dir.path().join("cache");
    let ca = registry.ca();
    let render = |trusted: &str| {
        render_example(
            &ca,
            &cache,
            &[
                &format!("--guest=20-http={reference}"),
                &format!("--trusted-key={trusted}"),
                "--set=http.bind=:8088",
            ],
        )
    };
    let (ok, config, stderr) = render(&public);
    assert!(ok, "{stderr}");
    assert!(
        config.contains(&format!("# --- guest 20-http ({pinned}) ---")),
        "{config}"
    );
    assert!(config.contains("    bind :8088"), "{config}");

    // Not trusted: nothing renders, and the error names the slot and the reason.
    let (ok, config, stderr) = render(&stranger);
    assert!(!ok && config.is_empty());
    assert!(
        stderr.contains(&format!("guest 20-http ({reference}) cannot be loaded"))
            && stderr.contains("none of the trusted keys"),
        "{stderr}"
    );

    // The registry is down: the cached, verified copy renders the same.
    registry.stop();
    let (ok, again, stderr) = render(&public);
    assert!(ok, "{stderr}");
    assert!(again.contains(&format!("# --- guest 20-http ({pinned}) ---")));
}

/// Credentials from a docker config.json, named by `--registry-auth-file` or found through
/// `$DOCKER_CONFIG` as docker and cosign find it; a wrong one points at the file.
#[test]
fn credentials_come_from_a_docker_config_json() {
    use base64::Engine as _;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("oci://{}/team/http:v1", registry.host());
    let http = bundled("http");
    let config = |password: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        let json = format!(
            r#"{{"auths": {{"https://{}": {{"auth": "{auth}"}}}}, "credsStore": "desktop"}}"#,
            registry.host()
        );
        std::fs::write(dir.path().join("config.json"), json).unwrap();
    };
    let guest = |args: &[&str], how: &dyn Fn(&mut Command)| {
        let mut command = wasmconfd();
        command
            .arg("guest")
            .args(args)
            .arg("--registry-ca")
            .arg(registry.ca())
            .env("HOME", dir.path());
        how(&mut command);
        run(&mut command)
    };
    let by_flag = |command: &mut Command| {
        command
            .arg("--registry-auth-file")
            .arg(dir.path().join("config.json"));
    };
    let by_docker_config = |command: &mut Command| {
        command.env("DOCKER_CONFIG", dir.path());
    };

    config(PASSWORD);
    let (ok, pushed, stderr) = guest(&["push", http.to_str().unwrap(), &reference], &by_flag);
    assert!(ok, "{stderr}");
    let (ok, pulled, stderr) = guest(
        &["pull", &reference, "--insecure-allow-unsigned"],
        &by_docker_config,
    );
    assert!(ok, "{stderr}");
    assert_eq!(pulled, pushed);

    config("wrong");
    let (ok, _, stderr) = guest(&["push", http.to_str().unwrap(), &reference], &by_flag);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{} refused the credentials", registry.host()))
            && stderr.contains("entry in the docker config.json"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("config.json"), "{").unwrap();
    let (ok, _, stderr) = guest(&["pull", &reference], &by_docker_config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "{} is not a docker config.json",
            dir.path().join("config.json").display()
        )),
        "{stderr}"
    );
}

/// A guest that cannot be loaded (here: not in the registry) stops the start, naming it, unless
/// missing guests are allowed: then the others render and the log says what was left out.
#[test]
fn a_guest_that_cannot_be_loaded_stops_the_start_unless_missing_guests_are_allowed() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let http = format!("oci://{}/team/http:v1", registry.host());
    let pinned = push_and_sign(&registry, &bundled("http"), &http, &key);
    let missing = format!("oci://{}/team/paths:v1", registry.host());
    let render = |extra: &str| {
        render_example(
            &registry.ca(),
            &dir.path().join("cache"),
            &[
                &format!("--guest=20-http={http}"),
                &format!("--guest=50-paths={missing}"),
                &format!("--trusted-key={public}"),
                extra,
            ],
        )
    };
    let (ok, config, stderr) = render("--log-level=info");
    assert!(!ok && config.is_empty());
    assert!(
        stderr.contains(&format!("guest 50-paths ({missing}) cannot be loaded"))
            && stderr
                .contains("nothing is rendered (--allow-missing-guests would go on without it)"),
        "{stderr}"
    );

    let (ok, config, stderr) = render("--allow-missing-guests");
    assert!(ok, "{stderr}");
    assert!(
        config.contains(&format!("# --- guest 20-http ({pinned}) ---")),
        "{config}"
    );
    assert!(!config.contains("50-paths"), "{config}");
    assert!(
        stderr.contains(&format!("guest 50-paths ({missing}) cannot be loaded"))
            && stderr.contains("left out (--allow-missing-guests)"),
        "{stderr}"
    );
}

/// `guest inspect` says what a guest is, from the registry or a file: where it is pinned,
/// whether and by whom it is signed, its digest and size, and whether this wasmconfd loads it.
#[test]
fn inspect_reports_signature_digest_size_and_world() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "team");
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let http = bundled("http");
    let bytes = std::fs::read(&http).unwrap();
    let signed = format!("oci://{}/team/http:v1", registry.host());
    let pinned = push_and_sign(&registry, &http, &signed, &key);
    let unsigned = format!("oci://{}/team/https:v1", registry.host());
    let (ok, _, stderr) = guest(
        &registry,
        &["push", bundled("https").to_str().unwrap(), &unsigned],
    );
    assert!(ok, "{stderr}");
    let cache = dir.path().join("cache");
    let inspect = |what: &str, keys: &[&str]| {
        let mut args = vec!["inspect", what, "--cache-dir", cache.to_str().unwrap()];
        for key in keys {
            args.extend(["--trusted-key", key]);
        }
        let (ok, report, stderr) = guest(&registry, &args);
        assert!(ok, "{stderr}");
        report
    };
    let line = |report: &str, key: &str| {
        report
            .lines()
            .find(|line| line.starts_with(&format!("{key:<11} ")))
            .map(|line| line[12..].to_string())
            .unwrap_or_else(|| panic!("no {key} in:\n{report}"))
    };

    let report = inspect(&signed, &[&stranger, &public]);
    assert_eq!(line(&report, "reference"), signed);
    assert_eq!(line(&report, "pinned"), pinned);
    assert_eq!(
        line(&report, "signature"),
        format!("verified: signed by {public}")
    );
    assert_eq!(
        line(&report, "digest"),
        wasmconfd::guests::oci::digest_of(&bytes)
    );
    assert_eq!(line(&report, "size"), format!("{} bytes", bytes.len()));
    assert_eq!(
        line(&report, "world"),
        "wasmconfd:haproxy/guest@0.5.0 (this wasmconfd loads it)"
    );
    assert_eq!(line(&report, "protos"), "http");
    assert_eq!(
        line(&report, "settings"),
        "bind: the frontend's bind address (default :80)"
    );
    assert_eq!(
        line(&report, "endpoints"),
        "address, port and conditions only (no ports, node, zone or pod)"
    );
    assert_eq!(
        line(&report, "ports"),
        "none (each endpoint still comes with its routed port)"
    );
    assert_eq!(line(&report, "exports"), "describe");
    assert_eq!(line(&report, "imports"), "wasmconfd:haproxy/host@0.5.0");
    assert!(
        line(&report, "sandbox").starts_with("the WASI imports are linked deny-all"),
        "{report}"
    );

    let report = inspect(&signed, &[]);
    assert_eq!(
        line(&report, "signature"),
        "signed; pass --trusted-key FILE to check by whom"
    );
    let report = inspect(&signed, &[&stranger]);
    assert!(
        line(&report, "signature").starts_with("refused: ")
            && report.contains("by none of the trusted keys"),
        "{report}"
    );
    let report = inspect(&unsigned, &[&public]);
    assert_eq!(
        line(&report, "signature"),
        "none: loads only with --insecure-allow-unsigned"
    );

    // Files: a guest, a component that is no guest, and a core module.
    let report = inspect(http.to_str().unwrap(), &[]);
    assert_eq!(line(&report, "file"), http.to_str().unwrap());
    assert!(!report.contains("signature"), "{report}");
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    let report = inspect(empty.to_str().unwrap(), &[]);
    assert!(
        line(&report, "world").starts_with("this wasmconfd does not load it:")
            && report.contains("no export `describe`")
            && report.contains("no export `render`"),
        "{report}"
    );
    assert_eq!(line(&report, "exports"), "none");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let report = inspect(core.to_str().unwrap(), &[]);
    assert!(
        line(&report, "world").starts_with("none: a core WebAssembly module, not a component"),
        "{report}"
    );

    // A guest's project instead of its component: what to give, and where it is once built.
    let project = dir.path().join("team-routes");
    std::fs::create_dir_all(project.join("build")).unwrap();
    let (ok, _, stderr) = guest(&registry, &["inspect", project.to_str().unwrap()]);
    let said = format!(
        "{} is a directory: give the guest's component, a .wasm file (a project made by \
         `wasmconfd guest new` builds it with ./build.sh into build/NAME.wasm)",
        project.display()
    );
    assert!(!ok && stderr.contains(&said), "{stderr}");
    std::fs::copy(&http, project.join("build/team-routes.wasm")).unwrap();
    let (ok, _, stderr) = guest(&registry, &["push", project.to_str().unwrap(), &unsigned]);
    let there = format!(
        "; {} is there",
        project.join("build/team-routes.wasm").display()
    );
    assert!(!ok && stderr.contains(&(said + &there)), "{stderr}");
}
