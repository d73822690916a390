//! Real HTTP traffic through the real HAProxy, configured by `wasmconfd render` with the
//! bundled guests, to backends on loopback.

mod common;

use common::{run, wasmconfd};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A backend that answers every request with its name and the request's headers.
fn backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                if head.is_empty() {
                    return; // a health check
                }
                let body = format!("{name}\n{}", head.to_ascii_lowercase());
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = (&stream).write_all(response.as_bytes());
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (status code, body) of `GET /` with `Host: host`.
fn get(port: u16, host: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
        .args(["render", "--check", "--cluster"])
        .arg(&cluster)
        .arg("--output")
        .arg(&config)
        .args(["--set", &format!("http.bind=127.0.0.1:{http}")])
        .args(["--set", &format!("https.bind=127.0.0.1:{https}")])
        .args(["--set", "base.log=none"]));
    assert!(ok, "{stderr}");

    let _haproxy = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed: install it (apt-get install haproxy); .ci/run does"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            Instant::now() < deadline,
            "HAProxy did not start listening on {http}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

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
