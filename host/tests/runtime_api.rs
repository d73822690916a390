//! The Runtime API against the real HAProxy: a change classified as hitless is applied on the
//! admin socket, read back, and traffic follows it, without a reload.

mod common;

use common::{backend, free_port, http_get, start_haproxy};
use std::ffi::OsStr;
use std::time::{Duration, Instant};
use wasmconfd::apply::plan::{Plan, plan};
use wasmconfd::apply::runtime_api::{self, RuntimeError};
use wasmconfd::assemble::{self, Output};
use wasmconfd::bindings::{Directive, MapEntry, MapFile, Section, SectionKind};
use wasmconfd::fragment::Fragment;
use wasmconfd::guests::{Part, Source};

fn directive(keyword: &str, args: &[&str]) -> Directive {
    Directive::new(keyword, args)
}

/// A frontend routing through `maps/hosts.map` to backend `web` with `servers` (name, port).
fn fragment(http: u16, servers: &[(&str, u16)], hosts: &[&str]) -> Fragment {
    let bind = format!("127.0.0.1:{http}");
    let frontend = Section {
        kind: SectionKind::Frontend,
        name: Some("f".into()),
        directives: vec![
            directive("bind", &[&bind]),
            // As the bundled guests do: a map in `use_backend %[...]` would be opened only after
            // parsing, relative to HAProxy's working directory instead of the configuration's.
            directive(
                "http-request",
                &[
                    "set-var(txn.backend)",
                    "req.hdr(host),field(1,:),map_str(maps/hosts.map)",
                ],
            ),
            directive("use_backend", &["%[var(txn.backend)]"]),
        ],
    };
    let mut web = Section {
        kind: SectionKind::Backend,
        name: Some("web".into()),
        directives: vec![directive("balance", &["roundrobin"])],
    };
    for (name, port) in servers {
        let address = format!("127.0.0.1:{port}");
        web.directives.push(directive(
            "server",
            &[name, &address, "check", "inter", "500ms"],
        ));
    }
    let entries = hosts
        .iter()
        .map(|h| MapEntry {
            key: h.to_string(),
            value: "web".into(),
        })
        .collect();
    let hosts = MapFile {
        name: "hosts.map".into(),
        entries,
    };
    Fragment::new([frontend, web], [hosts])
}

#[test]
fn a_hitless_change_is_applied_read_back_and_followed_by_traffic() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let http = free_port();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let global = format!(
        "global\n    default-path config\n    stats socket {} level admin\ndefaults\n    mode http\n    \
         timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n",
        socket.display()
    );
    let old = fragment(http, &[("a", a)], &["one.test"]);
    let (static_part, guest_part) = (
        Part {
            slot: "00-global".into(),
            origin: "test".into(),
            source: Source::Static(global.clone()),
        },
        Part {
            slot: "20-web".into(),
            origin: "test".into(),
            source: Source::Static(String::new()),
        },
    );
    let assembled = assemble::assemble(&[
        (&static_part, Output::Static(&global)),
        (&guest_part, Output::Fragment(&old)),
    ])
    .unwrap();
    let config = dir.path().join("haproxy.cfg");
    wasmconfd::apply::install::write(&config, &assembled).unwrap();
    let _haproxy = start_haproxy(
        &[OsStr::new("-db"), OsStr::new("-f"), config.as_os_str()],
        &dir.path().join("haproxy.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(http, "one.test").1.starts_with("a\n") {
        assert!(
            Instant::now() < deadline,
            "HAProxy did not start: {:?}\n{}",
            http_get(http, "one.test"),
            std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Scale from a to b and c, and add a host: servers and map entries only.
    let new = fragment(http, &[("b", b), ("c", c)], &["one.test", "two.test"]);
    let Plan::Runtime(ops) = plan(
        std::slice::from_ref(&old),
        std::slice::from_ref(&new),
        "maps",
    ) else {
        panic!("scaling and a new host must be hitless")
    };
    let draining = runtime_api::apply(&socket, &ops).unwrap();
    assert!(draining.is_empty(), "an idle server is deleted at once");
    runtime_api::verify(
        &socket,
        std::slice::from_ref(&new),
        "maps",
        &draining.into_iter().collect(),
    )
    .unwrap();

    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "answered by {seen:?}");
        let first = |host| {
            http_get(http, host)
                .1
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let (one, two) = (first("one.test"), first("two.test"));
        assert_ne!(one, "a", "a removed server still answers");
        seen.insert(one);
        seen.insert(two);
    }
    assert_eq!(seen, ["b".to_string(), "c".to_string()].into());

    // What HAProxy holds is not the old state: a check against it fails.
    let error = runtime_api::verify(
        &socket,
        std::slice::from_ref(&old),
        "maps",
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(error, RuntimeError::Mismatch(_)), "{error}");

    // A value the CLI could not carry as one word is refused before anything is sent.
    let error = runtime_api::apply(
        &socket,
        &[wasmconfd::apply::plan::Op::AddMap {
            file: "maps/hosts.map".into(),
            key: "a b".into(),
            value: "web".into(),
        }],
    )
    .unwrap_err();
    assert!(matches!(error, RuntimeError::Unsendable(_)), "{error}");
}
