//! Real HTTP traffic through the real HAProxy, configured by `wasmconfd render` with the
//! bundled guests, to backends on loopback.

mod common;

use common::{
    backend, free_port, haproxy_check, http_get as get, misbehave_guest, run,
    serve_haproxy as serve, wasmconfd,
};

#[test]
fn http_requests_reach_the_service_their_host_names() {
    let (shop, wild) = (backend("shop"), backend("wild"));
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: shop, namespace: t, annotations: \
             {{wasmconfd.io/domain: 'shop.test,www.shop.test', wasmconfd.io/proto: http}}}}\n\
             spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
             metadata: {{name: shop-1, namespace: t, labels: {{kubernetes.io/service-name: shop}}}}\n\
             ports: [{{name: http, port: {shop}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n\
             apiVersion: v1\nkind: Endpoints\nmetadata: {{name: wild, namespace: t, annotations: \
             {{domain: '*.preview.test', proto: http}}}}\n\
             subsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{port: {wild}}}]}}]\n"
        ),
    )
    .unwrap();
    let (http, https) = (free_port(), free_port());
    let config = dir.path().join("haproxy.cfg");
    let (ok, _, stderr) = run(wasmconfd()
        .args([
            "render",
            "--check",
            "--allow-loopback-endpoints",
            "--cluster",
        ])
        .arg(&cluster)
        .arg("--output")
        .arg(&config)
        .args(["--set", &format!("http.bind=127.0.0.1:{http}")])
        .args(["--set", &format!("https.bind=127.0.0.1:{https}")])
        .args(["--set", "base.log=none"])
        .args(["--set", "base.admin-socket=none"]));
    assert!(ok, "{stderr}");

    let _haproxy = serve(&config, http);

    let (status, body) = get(http, "shop.test");
    assert_eq!((status, body.lines().next()), (200, Some("shop")), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert_eq!(
        get(http, "WWW.Shop.Test:80").1.lines().next(),
        Some("shop"),
        "host names are case-insensitive, ports ignored"
    );
    assert_eq!(
        get(http, "pr-42.preview.test").1.lines().next(),
        Some("wild")
    );
    let (status, body) = get(http, "preview.test");
    assert_eq!(
        (status, body.as_str()),
        (404, "no service for this host"),
        "a wildcard does not match its own base"
    );
    assert_eq!(get(http, "unknown.test").0, 404);
}

/// A guest in a later slot that binds the port the http guest listens on is left out, so
/// HAProxy never runs two listeners on it (with SO_REUSEPORT both would start and split the
/// connections): every request reaches the service it names.
#[test]
fn a_guest_binding_another_guests_port_is_left_out_and_takes_no_request() {
    let victim = backend("victim");
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: shop, namespace: t, annotations: \
             {{wasmconfd.io/domain: shop.test, wasmconfd.io/proto: http}}}}\n\
             spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
             metadata: {{name: shop-1, namespace: t, labels: {{kubernetes.io/service-name: shop}}}}\n\
             ports: [{{name: http, port: {victim}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
        ),
    )
    .unwrap();
    let guests = dir.path().join("guests");
    std::fs::create_dir(&guests).unwrap();
    std::fs::write(guests.join("50-misbehave.wasm"), misbehave_guest()).unwrap();
    let http = free_port();
    let config = dir.path().join("haproxy.cfg");
    let (ok, _, stderr) = run(wasmconfd()
        .args(["render", "--allow-loopback-endpoints", "--cluster"])
        .arg(&cluster)
        .arg("--guests")
        .arg(&guests)
        .arg("--output")
        .arg(&config)
        .args(["--set", &format!("http.bind=127.0.0.1:{http}")])
        .args(["--set", "misbehave.mode=listen"])
        // The very address the http guest binds: HAProxy would split its connections.
        .args(["--set", &format!("misbehave.bind=127.0.0.1:{http}")])
        .args(["--set", &format!("https.bind=127.0.0.1:{}", free_port())])
        .args(["--set", "base.log=none"])
        .args(["--set", "base.admin-socket=none"]));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "guest 50-misbehave: section `listen misbehave` left out: it binds 127.0.0.1:{http}, \
             which guest 20-http, section `frontend http` already binds"
        )),
        "the error must name both sections:\n{stderr}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(!written.contains("listen misbehave"), "{written}");
    let (valid, output) = haproxy_check(&config);
    assert!(valid, "{output}");

    let _haproxy = serve(&config, http);
    let answers: Vec<_> = (0..40)
        .map(|_| {
            get(http, "shop.test")
                .1
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        answers.iter().all(|a| a == "victim"),
        "requests went elsewhere: {answers:?}"
    );
}
