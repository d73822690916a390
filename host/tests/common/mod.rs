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
        .env("WASMCONFD_CACHE_DIR", compile_cache());
    command
}

/// The compile cache the tests' wasmconfd shares: each guest is compiled once.
pub fn compile_cache() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-guests")
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

/// The misbehaving test guest (`tests/guests/misbehave`).
pub fn misbehave_guest() -> &'static [u8] {
    &test_guests()[0]
}

/// The test guest that writes its servers apart (`tests/guests/apart`).
pub fn apart_guest() -> &'static [u8] {
    &test_guests()[1]
}

/// The test guests, built for wasm32-wasip2 once per test process, in their own target
/// directory (the outer cargo holds the workspace's), with none of the outer build's flags.
fn test_guests() -> &'static [Vec<u8>; 2] {
    static WASM: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
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
            .args(["-p", "wasmconfd-test-guest-misbehave"])
            .args(["-p", "wasmconfd-test-guest-apart", "--target-dir"])
            .arg(&target)
            .current_dir(repo())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cannot run cargo to build the test guests");
        assert!(status.success(), "building the test guests failed");
        let read = |name: &str| {
            std::fs::read(target.join(format!(
                "wasm32-wasip2/guest/wasmconfd_test_guest_{name}.wasm"
            )))
            .unwrap()
        };
        [read("misbehave"), read("apart")]
    })
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long the test backends take to answer `GET /slow`.
pub const SLOW: std::time::Duration = std::time::Duration::from_secs(4);

/// A backend on 127.0.0.1 that answers every request with its name and, on the following lines,
/// the request's headers in lower case (`GET /slow` after [`SLOW`]). Returns its port.
pub fn backend(name: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve(listener, name.to_string());
    port
}

/// Like [`backend`], on `ip:port`.
pub fn backend_on(ip: &str, port: u16, name: String) {
    serve(std::net::TcpListener::bind((ip, port)).unwrap(), name);
}

fn serve(listener: std::net::TcpListener, name: String) {
    use std::io::{BufRead, BufReader, Write};
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                if head.is_empty() {
                    return; // a health check
                }
                if head.starts_with("GET /slow ") {
                    std::thread::sleep(SLOW);
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
}

/// (status code, body) of `GET /` with `Host: host` on 127.0.0.1:`port`; status 0 and the
/// error as the body when the request fails.
pub fn http_get(port: u16, host: &str) -> (u16, String) {
    http_get_path(port, host, "/")
}

/// Like [`http_get`], for `path`.
pub fn http_get_path(port: u16, host: &str, path: &str) -> (u16, String) {
    status_and_body(http_request("GET", port, host, path))
}

/// (status code, body) of `POST path` on 127.0.0.1:`port`.
pub fn http_post(port: u16, path: &str) -> (u16, String) {
    status_and_body(http_request("POST", port, "localhost", path))
}

fn status_and_body(response: std::io::Result<String>) -> (u16, String) {
    match response {
        Ok(response) => {
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
        Err(error) => (0, format!("error: {error}")),
    }
}

/// The whole response (head and body) to `GET path` with `Host: host` on 127.0.0.1:`port`.
pub fn http_response(port: u16, host: &str, path: &str) -> std::io::Result<String> {
    http_request("GET", port, host, path)
}

fn http_request(method: &str, port: u16, host: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A child process, killed and reaped when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `haproxy ARGS...` with its output in `log`; killed when dropped. Panics when HAProxy is
/// missing: a test that needs it must fail, never pass without it.
pub fn start_haproxy<S: AsRef<std::ffi::OsStr>>(args: &[S], log: &Path) -> Killed {
    Killed(
        Command::new("haproxy")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("haproxy is not installed: install it (apt-get install haproxy); .ci/run does"),
    )
}

/// HAProxy (`-db`) on `config`, logging beside it (`<config>.log` without its extension), once
/// it listens on `port`; killed when dropped.
pub fn serve_haproxy(config: &Path, port: u16) -> Killed {
    let haproxy = start_haproxy(
        &[
            std::ffi::OsStr::new("-db"),
            std::ffi::OsStr::new("-f"),
            config.as_os_str(),
        ],
        &config.with_extension("log"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "HAProxy did not start listening on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    haproxy
}

/// The first line of the body answered for `Host: host` on `port`: the backend's name,
/// HAProxy's own message, or the error.
pub fn first_line(port: u16, host: &str) -> String {
    http_get(port, host)
        .1
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// (reloads, failed reloads, worker pids) from `show proc` on a master socket. The master
/// re-executes itself on a reload, so its socket may be gone for a moment.
pub fn show_proc(socket: &Path) -> (u64, u64, Vec<String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let answer = loop {
        match wasmconfd::apply::runtime_api::command(socket, "show proc") {
            Ok(answer) => break answer,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "the master does not answer: {error}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (reloads, failed) = wasmconfd::apply::reload::master_reloads(&answer).unwrap();
    let workers = answer
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("worker"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    (reloads, failed, workers)
}
