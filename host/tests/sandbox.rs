//! Guests run sandboxed and limited: a guest that loops, hoards memory, panics or returns bad
//! output ends with an error naming it, the host survives, and the next render works.

mod common;

use std::time::{Duration, Instant};
use wasmconfd::assemble::{self, Output};
use wasmconfd::bindings::{Context, Input, Tls};
use wasmconfd::fragment::Fragment;
use wasmconfd::guests::{Guest, GuestError, Limits, Sandbox};
use wasmconfd::guests::{Part, Source};

/// The runtime with tight limits, and the misbehaving guest loaded in it.
fn misbehave() -> (Sandbox, Guest) {
    let limits = Limits {
        timeout: Duration::from_millis(500),
        memory: 64 << 20,
    };
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-guests");
    let runtime = Sandbox::new(limits, Some(cache)).unwrap();
    let guest = runtime
        .load("misbehave", common::misbehave_guest())
        .unwrap();
    (runtime, guest)
}

fn cluster(mode: &str) -> Input {
    Input {
        context: Context {
            maps_dir: "maps".into(),
            certs_dir: "certs".into(),
            settings: vec![("mode".into(), mode.into())],
        },
        services: Vec::new(),
        tls: Tls::without_certificates(),
        endpoints: true,
        reads: Default::default(),
    }
}

#[test]
fn limits_stop_misbehaving_guests_and_the_next_render_works() {
    let (runtime, guest) = misbehave();

    let started = Instant::now();
    let error = runtime.render(&guest, &cluster("loop")).unwrap_err();
    assert!(matches!(error, GuestError::Timeout { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("guest misbehave ran longer than its time limit"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the time limit did not stop the loop in time"
    );

    let error = runtime.render(&guest, &cluster("alloc")).unwrap_err();
    assert!(
        matches!(error, GuestError::OutOfMemory { limit_mib: 64, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("guest misbehave tried to use more than its memory limit of 64 MiB")
    );

    let error = runtime.render(&guest, &cluster("panic")).unwrap_err();
    assert!(matches!(error, GuestError::Trap { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("guest misbehave crashed: wasm trap: wasm `unreachable` instruction executed; it wrote: "),
        "{message}"
    );
    assert!(
        message.contains("misbehave was told to panic"),
        "the panic message is missing: {message}"
    );

    let error = runtime.render(&guest, &cluster("error")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "guest misbehave could not render: misbehave was told to fail"
    );

    let fragment = runtime.render(&guest, &cluster("ok")).unwrap();
    let args: Vec<_> = fragment.sections[0].directives[0].args().collect();
    assert_eq!(args, ["ok", "127.0.0.1:1"]);
}

fn assemble_one(fragment: &Fragment) -> Result<assemble::Assembled, assemble::AssembleError> {
    let part = Part {
        slot: "50-misbehave".into(),
        origin: "test".into(),
        source: Source::Static(String::new()),
    };
    assemble::assemble(&[(&part, Output::Fragment(fragment))])
}

#[test]
fn bad_output_is_refused_with_a_clear_error() {
    let (runtime, guest) = misbehave();

    let fragment = runtime.render(&guest, &cluster("newline")).unwrap();
    let error = assemble_one(&fragment).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "guest misbehave: section `backend misbehave`: argument 3 of `http-request`"
        ),
        "{error}"
    );
    assert!(error.contains("control character '\\n'"), "{error}");

    let fragment = runtime.render(&guest, &cluster("bad-name")).unwrap();
    let error = assemble_one(&fragment).unwrap_err().to_string();
    assert!(
        error.contains("backend name \"two words\" is not valid"),
        "{error}"
    );
}

#[test]
fn guests_see_no_environment_files_network_or_real_time_and_are_deterministic() {
    let (runtime, guest) = misbehave();
    // SAFETY: no other thread of this test process reads the environment concurrently.
    unsafe { std::env::set_var("WASMCONFD_SECRET", "leak") };
    let first = runtime.render(&guest, &cluster("probe")).unwrap();
    let probe: Vec<_> = first.sections[0].directives[0].args().collect();
    assert_eq!(
        &probe[..5],
        ["env=0", "args=0", "root=false", "net=false", "now=0"]
    );
    let second = runtime.render(&guest, &cluster("probe")).unwrap();
    assert_eq!(
        first, second,
        "the same input must give the same output, random seeds included"
    );
}

#[test]
fn a_guest_writing_a_lot_to_stdout_and_stderr_still_renders() {
    let (runtime, guest) = misbehave();
    let fragment = runtime.render(&guest, &cluster("chatty")).unwrap();
    assert_eq!(fragment.sections[0].directives[0].keyword(), "server");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_with_the_guest_name() {
    let error = misbehave()
        .0
        .load("junk", b"\0asm not really")
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .starts_with("guest junk is not a valid wasmconfd guest component"),
        "{error}"
    );
}

/// The service `shop/web` with one endpoint, `10.0.0.1:8080`, and an annotation.
fn web_service() -> std::sync::Arc<wasmconfd::bindings::Service> {
    use wasmconfd::bindings::{Endpoint, Service};
    std::sync::Arc::new(Service {
        namespace: "shop".into(),
        name: "web".into(),
        domains: vec!["shop.example.com".into()],
        proto: "http".into(),
        ports: Vec::new(),
        port: None,
        listen_port: None,
        endpoints: vec![Endpoint {
            address: "10.0.0.1".into(),
            port: Some(8080),
            ports: Vec::new(),
            ready: true,
            serving: true,
            terminating: false,
            node: None,
            zone: None,
            target_pod: None,
        }],
        annotations: vec![("team.example.com/owner".into(), "shop".into())],
        labels: Vec::new(),
        creation_time: None,
    })
}

/// Whether `fragment` has the backend of [`web_service`] with its server.
fn serves_web(fragment: &Fragment) -> bool {
    let backend = fragment
        .sections
        .iter()
        .find(|s| s.name.as_deref() == Some("http_shop_web"));
    backend.is_some_and(|backend| {
        (backend.directives.iter())
            .any(|d| d.keyword() == "server" && d.arg(1) == Some("10.0.0.1:8080"))
    })
}

/// A sandbox with the bundled http guest of an earlier version of the contract (`fixtures/`).
fn http_built_for(wasm: &[u8]) -> (Sandbox, Guest) {
    let runtime = Sandbox::new(Limits::default(), None).unwrap();
    let guest = runtime.load("http", wasm).unwrap();
    (runtime, guest)
}

/// An input of [`web_service`] alone, without settings.
fn web_input() -> Input {
    let mut input = cluster("ok");
    input.context.settings.clear();
    input.services.push(web_service());
    input
}

/// A guest built for `wasmconfd:haproxy@0.2.0` (the bundled http guest before 0.3.0) loads,
/// describes itself and renders, without the certificates its version does not know.
#[test]
fn a_guest_built_for_0_2_0_still_loads_and_renders() {
    let (runtime, guest) = http_built_for(include_bytes!("fixtures/http-0.2.0.wasm"));
    assert_eq!(guest.world(), wasmconfd::bindings::WORLD_0_2);
    let protos = guest.description().and_then(|d| d.protos.clone());
    assert_eq!(protos, Some(vec!["http".to_string()]));
    let input = web_input();
    assert!(serves_web(&runtime.render(&guest, &input).unwrap()));
}

/// A guest built for `wasmconfd:haproxy@0.4.0` (the bundled http guest before 0.5.0) loads; as
/// it cannot say whether it reads the services' ports, it is taken to read them, and what else
/// its description says holds.
#[test]
fn a_guest_built_for_0_4_0_still_loads_and_is_handed_the_services_ports() {
    let (runtime, guest) = http_built_for(include_bytes!("fixtures/http-0.4.0.wasm"));
    assert_eq!(guest.world(), wasmconfd::bindings::WORLD_0_4);
    let description = guest.description().unwrap();
    assert!(description.servers_apart && description.ports);
    let reads = wasmconfd::bindings::Reads::of(Some(description));
    assert!(reads.ports && !reads.endpoint_details, "{reads:?}");
    assert_eq!(reads.annotations, Some(vec!["wasmconfd.io/*".to_string()]));
    let input = web_input();
    assert!(serves_web(&runtime.render(&guest, &input).unwrap()));
    let placements = (runtime.servers(&guest, &input.context, &input.services, &reads)).unwrap();
    assert_eq!(placements[0][0].servers[0].arg(1), Some("10.0.0.1:8080"));
}

/// A guest built for `wasmconfd:haproxy@0.3.0` (the bundled http guest before 0.4.0) loads,
/// and, as it cannot say which annotations it reads, is taken to read them all; its render and
/// its `servers` run.
#[test]
fn a_guest_built_for_0_3_0_still_loads_reads_every_annotation_and_writes_servers_apart() {
    let (runtime, guest) = http_built_for(include_bytes!("fixtures/http-0.3.0.wasm"));
    assert_eq!(guest.world(), wasmconfd::bindings::WORLD_0_3);
    let description = guest.description().unwrap();
    assert!(description.servers_apart);
    let reads = wasmconfd::bindings::Reads::of(Some(description));
    assert_eq!(reads, wasmconfd::bindings::Reads::default(), "all of them");
    let input = web_input();
    let fragment = runtime.render(&guest, &input).unwrap();
    assert!(serves_web(&fragment));
    let placements = (runtime.servers(&guest, &input.context, &input.services, &reads)).unwrap();
    assert_eq!(placements[0][0].section, "http_shop_web");
    assert_eq!(placements[0][0].servers[0].arg(1), Some("10.0.0.1:8080"));
}

#[test]
fn a_guest_returning_one_string_over_and_over_is_stopped_before_the_host_copies_it() {
    let (runtime, guest) = misbehave();
    let expected = format!(
        "guest misbehave gave the host more than the {} MiB one call may copy out of its \
         memory (each string counted as often as it appears)",
        wasmconfd::guests::sandbox::OUTPUT_LIMITS.copied_bytes >> 20
    );
    for what in ["args", "names", "entries", "comments"] {
        let mut input = cluster("alias");
        input.context.settings.push(("alias".into(), what.into()));
        let error = runtime.render(&guest, &input).unwrap_err();
        assert_eq!(error.to_string(), expected, "aliased {what}");
    }
    let context = cluster("alias").context;
    let error = (runtime.servers(&guest, &context, &[], &Default::default())).unwrap_err();
    assert_eq!(error.to_string(), expected, "aliased placements");

    let fragment = runtime.render(&guest, &cluster("ok")).unwrap();
    assert_eq!(fragment.sections[0].directives[0].keyword(), "server");
}
