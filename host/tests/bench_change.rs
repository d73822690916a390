//! A benchmark, not a test (`#[ignore]`): how long one endpoint change takes to reach HAProxy,
//! and what it costs wasmconfd, with N services x 3 endpoints (`BENCH_SERVICES`, default 2,000:
//! 6,000 servers, about the most a running HAProxy can have under this machine's open-files
//! limit). Through the fake API server, `wasmconfd run` (release build) and a real HAProxy in
//! master-worker mode, every server on loopback:
//!
//! ```console
//! $ cargo test --release -p wasmconfd --test bench_change -- --ignored --nocapture
//! ```
//!
//! `BENCH_WASMCONFD=PATH` runs that binary instead, with the tests' compile cache (its first run
//! compiles the guests: run it once before measuring), to compare two builds in one sitting.
//! Prints, over 30 changes, the median time from the API write until HAProxy's admin socket
//! shows the new server, until wasmconfd has also checked and written the files, and the mean
//! CPU wasmconfd spent per change (user + system, from /proc, in 10 ms ticks).

mod common;

use common::{Killed, free_port, start_haproxy, wasmconfd};
use fake_apiserver::FakeApi;
use serde_json::json;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The debounce the daemon runs with: a change waits this long for more.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// How many endpoint changes are measured: CPU time comes in ticks of 10 ms, so a mean needs
/// many.
const CHANGES: usize = 30;

fn service(i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": format!("s{i}"), "namespace": "bench",
                        "annotations": {"wasmconfd.io/domain": format!("s{i}.bench.test"),
                                        "wasmconfd.io/proto": "http"}},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

/// The `k`th address on loopback: 127.0.0.1, ..., 127.0.0.250, 127.0.1.1, ..., a valid address
/// for each of 50,000 services x 3 endpoints.
fn loopback(k: usize) -> String {
    format!("127.{}.{}.{}", k / 62_500, k / 250 % 250, k % 250 + 1)
}

/// Service `i`'s EndpointSlice: 3 endpoints on loopback, the first at `first`.
fn slice(i: usize, first: &str) -> serde_json::Value {
    let ip = |n: usize| loopback(i * 3 + n);
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": format!("s{i}-1"), "namespace": "bench",
                        "labels": {"kubernetes.io/service-name": format!("s{i}")}},
           "ports": [{"name": "http", "port": 9}],
           "endpoints": [{"addresses": [first]}, {"addresses": [ip(1)]}, {"addresses": [ip(2)]}]})
}

/// What `command` answers on the admin socket `socket`.
fn ask(socket: &std::path::Path, command: &str) -> String {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return String::new();
    };
    let _ = stream.write_all(format!("{command}\n").as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// CPU time (user + system) process `pid` has used.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Of process `pid`'s memory, in MiB, the fields of `/proc/PID/status` named `fields`: `VmHWM`
/// (its peak resident memory), `RssAnon`, `RssFile`.
fn memory_mib<const N: usize>(pid: u32, fields: [&str; N]) -> [u64; N] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    fields.map(|field| {
        let line = (status.lines())
            .find(|l| {
                l.strip_prefix(field)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
            .unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            / 1024
    })
}

/// The value of the metric line starting with `name ` on the status port.
fn metric(status: u16, name: &str) -> u64 {
    let (_, metrics) = common::http_get_path(status, "wasmconfd", "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// When `path` was last replaced: its inode and modification time. Polled instead of the status
/// port, whose answers would cost the daemon CPU of their own.
fn version(path: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.modified().ok()?))
}

/// `BENCH_SERVICES`, or `default`.
fn services(default: usize) -> usize {
    std::env::var("BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `wasmconfd` (or `BENCH_WASMCONFD`, another build to compare), with the tests' compile cache:
/// warm after a build's first run, so that its peak RSS does not count Cranelift's memory
/// (at 10,000 services 87-92 MiB warm against 107-118 cold).
fn daemon() -> std::process::Command {
    match std::env::var_os("BENCH_WASMCONFD") {
        Some(program) => {
            let mut command = std::process::Command::new(program);
            command.env("WASMCONFD_CACHE_DIR", common::compile_cache());
            command
        }
        None => wasmconfd(),
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn mean(values: &[Duration]) -> Duration {
    values.iter().sum::<Duration>() / values.len() as u32
}

/// `d` in milliseconds with one decimal, for the `bench:` lines `scripts/bench-scale.sh` reads.
fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release"]
fn one_endpoint_change() {
    let n = services(2000);
    let api = FakeApi::start();
    for i in 0..n {
        api.apply(service(i));
        api.apply(slice(i, &loopback(i * 3)));
    }
    let dir = tempfile::tempdir().unwrap();
    let (http, status) = (free_port(), free_port());
    let [config, socket, admin] =
        ["haproxy.cfg", "master.sock", "admin.sock"].map(|f| dir.path().join(f));
    std::fs::write(&config, "defaults\n    timeout connect 1s\n").unwrap();
    let _haproxy = start_haproxy(
        &[
            OsStr::new("-W"),
            OsStr::new("-S"),
            socket.as_os_str(),
            OsStr::new("-f"),
            config.as_os_str(),
        ],
        &dir.path().join("haproxy.log"),
    );
    let daemon = Killed(
        daemon()
            .args([
                "run",
                "--allow-loopback-endpoints",
                "--reload-method",
                "master-socket",
            ])
            .arg("--master-socket")
            .arg(&socket)
            .arg("--haproxy-conf")
            .arg(&config)
            .args(["--api-servers", &api.url(), "--debounce", "20ms"])
            .args(["--status-address", &format!("127.0.0.1:{status}")])
            .args(["--set", &format!("http.bind=127.0.0.1:{http}")])
            .args(["--set", &format!("https.bind=127.0.0.1:{}", free_port())])
            .args(["--set", "base.log=none"])
            .arg("--set")
            .arg(format!("base.admin-socket={}", admin.display()))
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let started = Instant::now();
    while !ask(&admin, "show servers state").contains(&format!("http_bench_s{}", n - 1)) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "HAProxy never got the first configuration"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));

    let (mut in_haproxy, mut written, mut spent) = (Vec::new(), Vec::new(), Vec::new());
    for change in 0..CHANGES {
        let address = format!("127.0.200.{}", change + 1);
        let (before, cpu_before) = (version(&config), cpu(pid));
        let start = Instant::now();
        api.apply(slice(change * (n / CHANGES), &address));
        while !ask(&admin, "show servers state").contains(&address) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the change never reached HAProxy"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        in_haproxy.push(start.elapsed());
        while version(&config) == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        written.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        spent.push(cpu(pid) - cpu_before);
    }
    let (in_haproxy, written, spent) = (median(in_haproxy), median(written), mean(&spent));
    println!(
        "{n} services x 3 endpoints, debounce {DEBOUNCE:?}: in HAProxy after {in_haproxy:?}, \
         files checked and written after {written:?} (medians of {CHANGES}), wasmconfd CPU {spent:?} \
         per change (mean)"
    );
    println!(
        "bench: in_haproxy_ms={} written_ms={} cpu_ms={}",
        ms(in_haproxy),
        ms(written),
        ms(spent)
    );
}

/// wasmconfd's own cost at sizes no running HAProxy fits here (`BENCH_SERVICES`, default
/// 10,000): `run` with a check and a reload command that do nothing (`true`), so every change
/// renders, "checks", writes and "reloads". Prints the time from the start until the first
/// configuration is applied (the initial lists included), the median time from the API write
/// until the files are written, the mean CPU per change, and the daemon's peak RSS with what
/// is resident at the end, anonymous and file-backed.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release"]
fn one_endpoint_change_without_haproxy() {
    let n = services(10_000);
    let api = FakeApi::start();
    for i in 0..n {
        api.apply(service(i));
        api.apply(slice(i, "10.0.0.1"));
    }
    let dir = tempfile::tempdir().unwrap();
    let status = free_port();
    let config = dir.path().join("haproxy.cfg");
    let daemon = Killed(
        daemon()
            .args([
                "run",
                "--allow-loopback-endpoints",
                "--reload-method",
                "command",
            ])
            .args(["--reload-cmd", "true", "--check-cmd", "true"])
            .arg("--haproxy-conf")
            .arg(&config)
            .args(["--api-servers", &api.url(), "--debounce", "20ms"])
            .args(["--status-address", &format!("127.0.0.1:{status}")])
            .args(["--set", "base.log=none", "--set", "base.admin-socket=none"])
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let reloads = || metric(status, r#"wasmconfd_applies_total{class="reload"}"#);
    let started = Instant::now();
    while reloads() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no first configuration"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // From the start (the initial lists included) to the first configuration applied.
    let first = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));

    let (mut written, mut spent) = (Vec::new(), Vec::new());
    for change in 0..CHANGES {
        let (before, cpu_before) = (version(&config), cpu(pid));
        let start = Instant::now();
        api.apply(slice(
            change * (n / CHANGES),
            &format!("10.0.200.{}", change + 1),
        ));
        while version(&config) == before {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the change was never applied"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        written.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        spent.push(cpu(pid) - cpu_before);
    }
    let (written, spent) = (median(written), mean(&spent));
    // What is resident at the end: anonymous (the heap, the guests' compiled code) and
    // file-backed (the binary's code and the pages the kernel maps around it: 18 MiB in one run
    // and 21 in the next for the same code, which moves the peak alike).
    let [rss, anon, file] = memory_mib(pid, ["VmHWM", "RssAnon", "RssFile"]);
    println!(
        "{n} services x 3 endpoints, debounce {DEBOUNCE:?}, no HAProxy: first configuration \
         {first:?} after start, written after {written:?} (median of {CHANGES}), wasmconfd CPU \
         {spent:?} per change (mean), peak RSS {rss} MiB (at the end {anon} MiB anonymous, \
         {file} MiB file-backed)"
    );
    println!(
        "bench: first_ms={} written_ms={} cpu_ms={} rss_mib={rss} anon_mib={anon} file_mib={file}",
        ms(first),
        ms(written),
        ms(spent)
    );
}
