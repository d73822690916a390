//! A benchmark, not a test (`#[ignore]`): the bundled http guest's render of N services x 3
//! endpoints (`BENCH_SERVICES`, default 10,000) through Wasm (the sandbox: lowering the model into the guest, the guest, lifting
//! its output), to compare with the same render of the same input natively:
//!
//! ```console
//! $ cargo test --release -p wasmconfd --test bench_render -- --ignored --nocapture
//! $ cargo test --release -p wasmconfd-guest-http -- --ignored --nocapture
//! ```
//!
//! `BENCH_GUEST=PATH` renders with another build of the guest.

use wasmconfd::bindings::{
    Context, Endpoint, EndpointPort, Input, Protocol, Reads, Service, ServicePort, Tls,
};
use wasmconfd::guests::parts::BUNDLED;
use wasmconfd::guests::{Limits, Sandbox};

/// `BENCH_SERVICES`, or 10,000.
fn services() -> usize {
    std::env::var("BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// The input of the native benchmark (`guests/http`) with `n` services, as the host's types.
fn cluster(n: usize) -> Input {
    let services: Vec<Service> = (0..n)
        .map(|i| {
            let namespace = format!("ns-{}", i % 100);
            let endpoints = (0..3)
                .map(|e| {
                    let n = i * 3 + e;
                    Endpoint {
                        address: format!(
                            "10.{}.{}.{}",
                            n / 62500 % 250,
                            n / 250 % 250,
                            n % 250 + 1
                        ),
                        port: Some(8080),
                        ports: vec![EndpointPort {
                            name: "http".into(),
                            number: 8080,
                            protocol: Protocol::Tcp,
                        }],
                        ready: true,
                        serving: true,
                        terminating: false,
                        node: None,
                        zone: None,
                        target_pod: None,
                    }
                })
                .collect();
            Service {
                domains: vec![format!("svc-{i}.{namespace}.example.com")],
                namespace,
                name: format!("svc-{i}"),
                proto: "http".into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    number: 80,
                    protocol: Protocol::Tcp,
                    app_protocol: None,
                }],
                port: Some("http".into()),
                listen_port: None,
                endpoints,
                annotations: Vec::new(),
                labels: Vec::new(),
                creation_time: None,
            }
        })
        .collect();
    Input {
        context: Context {
            maps_dir: "maps".into(),
            certs_dir: "certs".into(),
            settings: Vec::new(),
        },
        services: services.into_iter().map(std::sync::Arc::new).collect(),
        tls: Tls::without_certificates(),
        endpoints: true,
        reads: Default::default(),
    }
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release"]
fn wasm_render() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    // BENCH_GUEST=PATH renders with another build of the guest (another profile, say).
    let wasm = match std::env::var_os("BENCH_GUEST") {
        Some(path) => std::fs::read(path).unwrap(),
        None => BUNDLED
            .iter()
            .find(|(slot, _)| *slot == "20-http")
            .unwrap()
            .1
            .to_vec(),
    };
    let guest = sandbox.load("http", &wasm).unwrap();
    let n = services();
    // With the annotations and labels the guest reads, as the pipeline hands them.
    let input = Input {
        reads: std::sync::Arc::new(Reads::of(guest.description())),
        ..cluster(n)
    };
    let mut times: Vec<_> = (0..7)
        .map(|_| {
            let started = std::time::Instant::now();
            let output = sandbox.render(&guest, &input).unwrap();
            let took = started.elapsed();
            assert_eq!(
                output.sections.len(),
                n + 2,
                "frontend, 404 backend and one per service"
            );
            took
        })
        .collect();
    times.sort();
    println!("Wasm render of {n} services: {:?} (median of 7)", times[3]);
    println!("bench: wasm_ms={:.1}", times[3].as_secs_f64() * 1000.0);
}
