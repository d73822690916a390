//! A benchmark, not a test (`#[ignore]`): the bundled http guest's render of N services x 3
//! endpoints (`BENCH_SERVICES`, default 10,000) through Wasm and natively, in one process:
//!
//! ```console
//! $ cargo test --release -p wasmconfd --test bench_render -- --ignored --nocapture
//! ```
//!
//! Both render as `wasmconfd` renders this guest, which writes its `server` lines apart: `render`
//! of the services without their endpoints, then `servers` of all of them. Through Wasm, that is
//! the sandbox's two calls (lowering the input into a fresh instance, the guest, lifting its
//! output); natively, the guest's own code (the crate linked into this benchmark) called with
//! the same input, as the guest receives it. The two alternate, render by render, so that the
//! machine's speed, which moves by up to 2x within minutes here, moves both alike: the ratio
//! reported is the median of the ratios of neighbouring pairs.
//!
//! `BENCH_GUEST=PATH` renders another build of the guest through Wasm.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmconfd::bindings::{
    Context, Endpoint, EndpointPort, Input, Protocol, Reads, Service, ServicePort, Tls,
};
use wasmconfd::guests::parts::BUNDLED;
use wasmconfd::guests::{Limits, Sandbox};
use wasmconfd_guest::Guest as _;
use wasmconfd_guest_http::Http;

/// `BENCH_SERVICES`, or 10,000.
fn services() -> usize {
    std::env::var("BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Service `i` of the benchmark's cluster: namespace, name, domain and its endpoints' addresses
/// (all ready, on port 8080, named `http` like the service's port).
fn synthetic(i: usize) -> (String, String, String, Vec<String>) {
    let namespace = format!("ns-{}", i % 100);
    let name = format!("svc-{i}");
    let domain = format!("{name}.{namespace}.example.com");
    let addresses = (0..3)
        .map(|e| {
            let n = i * 3 + e;
            format!("10.{}.{}.{}", n / 62500 % 250, n / 250 % 250, n % 250 + 1)
        })
        .collect();
    (namespace, name, domain, addresses)
}

/// The cluster as the host holds it.
fn host_cluster(n: usize) -> Input {
    let services = (0..n)
        .map(|i| {
            let (namespace, name, domain, addresses) = synthetic(i);
            let endpoints = (addresses.into_iter())
                .map(|address| Endpoint {
                    address,
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
                })
                .collect();
            Arc::new(Service {
                namespace,
                name,
                domains: vec![domain],
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
            })
        })
        .collect();
    Input {
        context: Context {
            maps_dir: "maps".into(),
            certs_dir: "certs".into(),
            settings: Vec::new(),
        },
        services,
        tls: Tls::without_certificates(),
        endpoints: true,
        reads: Default::default(),
    }
}

/// The same services as the guest receives them: without the endpoint details and the ports it
/// does not read.
fn guest_services(n: usize) -> Vec<wasmconfd_guest::Service> {
    (0..n)
        .map(|i| {
            let (namespace, name, domain, addresses) = synthetic(i);
            let mut service =
                wasmconfd_guest::testing::service(&namespace, &name, "http").domain(&domain);
            for address in &addresses {
                service = service.endpoint(address, 8080, true);
            }
            let mut service = service.build();
            (service.ports, service.port) = (Vec::new(), None);
            for endpoint in &mut service.endpoints {
                endpoint.ports.clear();
            }
            service
        })
        .collect()
}

/// One full render through Wasm.
fn through_wasm(sandbox: &Sandbox, guest: &wasmconfd::guests::Guest, input: &Input) -> Timed {
    let without_endpoints = Input {
        endpoints: false,
        ..input.with(input.services.clone())
    };
    let (render, servers, fragment, placements) = time(
        || sandbox.render(guest, &without_endpoints).unwrap(),
        || (sandbox.servers(guest, &input.context, &input.services, &input.reads)).unwrap(),
    );
    Timed {
        render,
        servers,
        sections: fragment.sections.len(),
        server_lines: placements.iter().flatten().map(|p| p.servers.len()).sum(),
    }
}

/// The same render natively, given what the guest receives (made before the clock starts).
fn natively(services: &[wasmconfd_guest::Service]) -> Timed {
    let without_endpoints: Vec<_> = (services.iter().cloned())
        .map(|mut s| {
            s.endpoints.clear();
            s
        })
        .collect();
    let cluster = wasmconfd_guest::testing::cluster(without_endpoints);
    let (context, services) = (cluster.context.clone(), services.to_vec());
    let (render, servers, fragment, placements) = time(
        || Http::render(cluster).unwrap(),
        || Http::servers(context, services).unwrap(),
    );
    Timed {
        render,
        servers,
        sections: fragment.sections.len(),
        server_lines: placements.iter().flatten().map(|p| p.servers.len()).sum(),
    }
}

/// How long `render` and then `servers` take, and what they return (dropped after the clock
/// stops).
fn time<R, S>(
    render: impl FnOnce() -> R,
    servers: impl FnOnce() -> S,
) -> (Duration, Duration, R, S) {
    let started = Instant::now();
    let rendered = render();
    let render_took = started.elapsed();
    let placed = servers();
    (
        render_took,
        started.elapsed() - render_took,
        rendered,
        placed,
    )
}

/// One full render: how long `render` and `servers` took, and what they returned.
struct Timed {
    render: Duration,
    servers: Duration,
    sections: usize,
    server_lines: usize,
}

impl Timed {
    fn ms(&self) -> f64 {
        (self.render + self.servers).as_secs_f64() * 1e3
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release"]
fn wasm_and_native_render() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
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
    // With the annotations, labels, endpoint details and ports the guest reads, as the pipeline
    // hands them.
    let input = Input {
        reads: Arc::new(Reads::of(guest.description())),
        ..host_cluster(n)
    };
    assert!(
        !input.reads.endpoint_details && !input.reads.ports,
        "the native side leaves the endpoints' details and the ports out, as the guest says it \
         does not read them"
    );
    let services = guest_services(n);

    // Frontend, 404 backend and one per service; three servers each.
    let expected = (n + 2, 3 * n);
    let mut pairs = Vec::new();
    for pair in 0..12 {
        // Each pair in the other order than the last; the first pair warms up.
        let (wasm, native) = if pair % 2 == 0 {
            let wasm = through_wasm(&sandbox, &guest, &input);
            (wasm, natively(&services))
        } else {
            let native = natively(&services);
            (through_wasm(&sandbox, &guest, &input), native)
        };
        for (side, timed) in [("Wasm", &wasm), ("native", &native)] {
            let got = (timed.sections, timed.server_lines);
            assert_eq!(got, expected, "{side}: sections, server lines");
        }
        if pair > 0 {
            pairs.push((wasm, native));
        }
    }
    let median_of = |f: &dyn Fn(&(Timed, Timed)) -> f64| median(pairs.iter().map(f).collect());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (wasm, native) = (median_of(&|p| p.0.ms()), median_of(&|p| p.1.ms()));
    let ratio = median_of(&|p| p.0.ms() / p.1.ms());
    println!(
        "http guest render of {n} services, medians of {} alternated pairs: \
         Wasm {wasm:.1} ms (render {:.1}, servers {:.1}), \
         native {native:.1} ms (render {:.1}, servers {:.1}), Wasm/native {ratio:.2}",
        pairs.len(),
        median_of(&|p| ms(p.0.render)),
        median_of(&|p| ms(p.0.servers)),
        median_of(&|p| ms(p.1.render)),
        median_of(&|p| ms(p.1.servers)),
    );
    println!("bench: wasm_ms={wasm:.1} native_ms={native:.1} ratio={ratio:.2}");
}
