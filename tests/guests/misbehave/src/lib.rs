//! A guest that misbehaves on purpose, to test the host's sandbox and limits. The setting
//! `mode` picks the misbehaviour:
//!
//! - `loop`: never returns; `alloc`: allocates without bound; `panic`: panics;
//! - `newline`: returns an argument with a newline; `bad-name`: a section name with a space;
//! - `error`: returns a render error; `probe`: reports what it can see of the outside world;
//! - `maps`: 101 map files, one more than a render may return; `log`: logs 2 MiB;
//! - `alias`: returns one 1 MiB string of its memory over and over, as the canonical ABI allows
//!   (a guest of another language may do so without `unsafe`): as every argument of 1,000 lines
//!   of 1,000 arguments (1 TiB if the host copied each), or, by the setting `alias`, as the
//!   names of 4,000 sections (`names`), the keys and values of 4,000 map entries (`entries`)
//!   or the comments of 4,000 lines (`comments`); its `servers` as the section of 4,000
//!   placements;
//! - `listen`: a `listen misbehave` section on the setting `bind` (default `:80`) answering
//!   every HTTP request with `misbehave`, as a guest trying to take another guest's port;
//! - `keys`: fails if anything in its input looks like a private key (`PRIVATE KEY`), else
//!   says how many certificates it sees, in a `describe` line;
//! - `route`: what a team guest writes: a frontend named after the setting `name` on the
//!   setting `bind`, routing each domain of each service it receives to a backend of that
//!   service's ready endpoints; the setting `violate` adds one forbidden thing (see
//!   [`violation`]), and `extra-domain` routes one more domain;
//! - `seen`: a `describe` line per service, naming the annotations and labels it receives,
//!   and each endpoint with what it receives of its details: it reads the annotations
//!   `misbehave.wasmconfd.io/*` and `wasmconfd.io/domain`, the label `tier`, and no endpoint
//!   details;
//! - anything else: a small valid backend.
//!
//! A service annotated `misbehave.wasmconfd.io/do: panic` makes it panic, and `invalid` makes it
//! return a directive HAProxy rejects, whatever the mode: a guest that breaks on live input.

use wasmconfd_guest::{
    Cluster, Context, Description, Directive, Fragment, Guest, MapFile, Placement, RenderError,
    Section, Service,
};

struct Misbehave;

impl Guest for Misbehave {
    fn describe() -> Description {
        Description {
            protos: None,
            settings: None,
            servers_apart: false,
            annotations: None,
            labels: None,
            endpoint_details: false,
            ports: false,
        }
        .reading(
            ["misbehave.wasmconfd.io/*", "wasmconfd.io/domain"],
            ["tier"],
        )
    }

    /// In the mode `alias` only: 4,000 placements in the section of one 1 MiB string.
    fn servers(context: Context, _: Vec<Service>) -> Result<Vec<Vec<Placement>>, RenderError> {
        if !(context.settings.iter()).any(|(k, v)| k == "mode" && v == "alias") {
            return Err(RenderError::Other(
                "misbehave writes servers apart only to alias".into(),
            ));
        }
        let placement = |section| Placement {
            section,
            servers: vec![Directive::new("server", ["a", "127.0.0.1:1"])],
        };
        Ok(vec![aliases(4000).into_iter().map(placement).collect()])
    }

    fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
        let mut backend = Section::backend("misbehave");
        let told = cluster
            .services
            .iter()
            .find_map(|s| s.annotation("misbehave.wasmconfd.io/do"));
        let mode = told.unwrap_or(cluster.setting_or("mode", "ok"));
        match mode {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("misbehave was told to panic"),
            "newline" => backend.push("http-request", ["set-header", "X-Evil", "a\nfrontend evil"]),
            "bad-name" => backend.name = Some("two words".into()),
            "error" => return Err(RenderError::Other("misbehave was told to fail".into())),
            "invalid" => backend.push("no-such-keyword", ["here"]),
            "maps" => {
                let maps = (0..101)
                    .map(|i| wasmconfd_guest::MapFile::new(format!("flood-{i}.map")))
                    .collect();
                return Ok(Fragment {
                    sections: vec![backend],
                    maps,
                });
            }
            "log" => {
                let line = "x".repeat(1024);
                for _ in 0..2048 {
                    wasmconfd_guest::log::info(&line);
                }
            }
            "route" => return Ok(route(&cluster)),
            "alias" => return Ok(alias(cluster.setting_or("alias", "args"))),
            "seen" => {
                for service in &cluster.services {
                    let keys = |pairs: &[(String, String)]| {
                        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                        keys.join(",")
                    };
                    let endpoints = service.endpoints.iter().map(|e| {
                        let or_none = |value: &Option<String>| value.clone().unwrap_or_default();
                        format!(
                            "endpoint={} ports={} node={} zone={} pod={}",
                            e.address,
                            e.ports.len(),
                            or_none(&e.node),
                            or_none(&e.zone),
                            or_none(&e.target_pod)
                        )
                    });
                    backend.push(
                        "describe",
                        [
                            service.name.clone(),
                            format!(
                                "ports={} port={}",
                                service.ports.len(),
                                service.port.as_deref().unwrap_or("-")
                            ),
                            format!("annotations={}", keys(&service.annotations)),
                            format!("labels={}", keys(&service.labels)),
                        ]
                        .into_iter()
                        .chain(endpoints),
                    );
                }
            }
            "keys" => {
                if format!("{cluster:?}").contains("PRIVATE KEY") {
                    return Err(RenderError::Other("a private key is in my input".into()));
                }
                let certificates = &cluster.tls.certificates;
                backend.push(
                    "describe",
                    [format!("certificates={}", certificates.len())]
                        .into_iter()
                        .chain(certificates.iter().map(|c| c.sans.join(","))),
                );
            }
            "listen" => {
                let listen = Section::listen("misbehave")
                    .with("mode", ["http"])
                    .with("bind", [cluster.setting_or("bind", ":80")])
                    .with(
                        "http-request",
                        [
                            "return",
                            "status",
                            "200",
                            "content-type",
                            "text/plain",
                            "string",
                        ]
                        .into_iter()
                        .chain(["misbehave"]),
                    );
                return Ok(Fragment {
                    sections: vec![listen],
                    maps: Vec::new(),
                });
            }
            "chatty" => {
                // Far more than any buffer the host keeps, on both streams.
                for line in 0..2000 {
                    println!("stdout line {line} of a chatty guest, padded to some length....");
                    eprintln!("stderr line {line} of a chatty guest, padded to some length....");
                }
                backend.push("server", ["ok", "127.0.0.1:1"]);
            }
            "probe" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let hashed = std::collections::hash_map::RandomState::new();
                backend.push(
                    "describe",
                    [
                        format!("env={}", std::env::vars().count()),
                        format!("args={}", std::env::args().count()),
                        format!("root={}", std::fs::read_dir("/").is_ok()),
                        format!(
                            "net={}",
                            std::net::TcpStream::connect("127.0.0.1:9").is_ok()
                        ),
                        format!("now={now}"),
                        format!("hash={}", std::hash::BuildHasher::hash_one(&hashed, 1u8)),
                    ],
                );
            }
            _ => backend.push("server", ["ok", "127.0.0.1:1"]),
        }
        Ok(Fragment {
            sections: vec![backend],
            maps: Vec::new(),
        })
    }
}

/// `count` strings that are all the one 1 MiB string of this guest's memory.
fn aliases(count: usize) -> Vec<String> {
    static TEXT: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    let (at, len) = *TEXT.get_or_init(|| {
        let text = std::mem::ManuallyDrop::new("x".repeat(1 << 20));
        (text.as_ptr() as usize, text.len())
    });
    (0..count)
        // SAFETY: none. They all own the same bytes, and are never dropped here: they are
        // returned, and a host that lifted them all would ask this guest to free each.
        .map(|_| unsafe { String::from_raw_parts(at as *mut u8, len, len) })
        .collect()
}

/// The `alias` mode: one string returned over and over, where `what` says.
fn alias(what: &str) -> Fragment {
    let mut fragment = Fragment {
        sections: Vec::new(),
        maps: Vec::new(),
    };
    match what {
        "names" => {
            fragment.sections = (aliases(4000).into_iter()).map(Section::backend).collect();
        }
        "entries" => {
            let mut map = MapFile::new("alias.map");
            for (key, value) in aliases(4000).into_iter().zip(aliases(4000)) {
                map.push(key, value);
            }
            fragment.maps.push(map);
        }
        "comments" => {
            let mut backend = Section::backend("alias");
            for comment in aliases(4000) {
                let mut line = Directive::new("server", ["a", "127.0.0.1:1"]);
                line.comment = Some(comment);
                backend.directives.push(line);
            }
            fragment.sections.push(backend);
        }
        _ => {
            let mut backend = Section::backend("alias");
            for _ in 0..1000 {
                backend.push("http-request", aliases(1000));
            }
            fragment.sections.push(backend);
        }
    }
    fragment
}

/// The `route` mode: routing as a team guest writes it, plus the violation asked for.
fn route(cluster: &Cluster) -> Fragment {
    let name = cluster.setting_or("name", "misbehave");
    let mut frontend = Section::frontend(name)
        .with("mode", ["http"])
        .with("bind", [cluster.setting_or("bind", ":8081")]);
    let mut sections = Vec::new();
    let mut domains: Vec<(String, String)> = Vec::new();
    for service in &cluster.services {
        let backend_name = format!("{name}_{}_{}", service.namespace, service.name);
        let mut backend = Section::backend(&backend_name).with("mode", ["http"]);
        backend.extend(wasmconfd_guest::servers(service));
        sections.push(backend);
        for domain in &service.domains {
            domains.push((domain.clone(), backend_name.clone()));
        }
    }
    if let Some(extra) = cluster.setting("extra-domain") {
        let first = sections.first().and_then(|s| s.name.clone());
        domains.push((extra.to_string(), first.unwrap_or_else(|| name.to_string())));
    }
    for (i, (domain, backend)) in domains.iter().enumerate() {
        let acl = format!("host{i}");
        frontend.push("acl", [acl.as_str(), "hdr(host)", "-i", domain]);
        frontend.push("use_backend", [backend.as_str(), "if", &acl]);
    }
    let mut fragment = Fragment {
        sections: vec![frontend],
        maps: Vec::new(),
    };
    fragment.sections.extend(sections);
    if let Some(what) = cluster.setting("violate") {
        let marker = cluster.setting_or("marker", "/tmp/wasmconfd-marker");
        violation(&mut fragment, name, what, marker);
    }
    fragment
}

/// Add the forbidden thing `what` to `fragment`: `global` (`master-worker` and a `program`
/// running `touch MARKER`, MARKER being the setting `marker`), `lua` (a `global` with
/// `lua-load MARKER.lua`), `external-check`, `defaults`, `peers`, `ring`,
/// `mailers`, `userlist`, `dot-if` (`.if 0` alone), `setenv`, `stats-socket`, `chroot`,
/// `foreign-name` (a backend named `http`), `foreign-map` (reads `maps/hosts.map`), `file`
/// (returns `/etc/passwd`), `env`, `server` (a server on `169.254.169.254`).
fn violation(fragment: &mut Fragment, name: &str, what: &str, marker: &str) {
    let backend = |directive: &str, args: &[&str]| {
        Section::backend(format!("{name}-violation")).with(directive, args.iter().copied())
    };
    let section = match what {
        "global" => {
            fragment
                .sections
                .push(Section::global().with("master-worker", std::iter::empty::<&str>()));
            Section::new(
                wasmconfd_guest::SectionKind::Program,
                Some(format!("{name}-p")),
            )
            .with("command", ["touch", marker])
        }
        "lua" => Section::global().with("lua-load", [format!("{marker}.lua")]),
        "external-check" => {
            backend("option", &["external-check"]).with("external-check", ["command", "/bin/true"])
        }
        "defaults" => Section::defaults().with("timeout", ["server", "1ms"]),
        "peers" | "ring" | "mailers" | "userlist" => {
            let kind = match what {
                "peers" => wasmconfd_guest::SectionKind::Peers,
                "ring" => wasmconfd_guest::SectionKind::Ring,
                "mailers" => wasmconfd_guest::SectionKind::Mailers,
                _ => wasmconfd_guest::SectionKind::Userlist,
            };
            Section::new(kind, Some(format!("{name}-x")))
        }
        "dot-if" => backend(".if", &["0"]),
        "setenv" => backend("setenv", &["PATH", "/tmp"]),
        "stats-socket" => backend("stats", &["socket", "/tmp/wasmconfd-team.sock"]),
        "chroot" => backend("chroot", &["/nowhere"]),
        "foreign-name" => Section::backend("http"),
        "foreign-map" => backend(
            "http-request",
            &[
                "set-header",
                "X",
                "%[req.hdr(host),map_str(maps/hosts.map)]",
            ],
        ),
        "file" => backend(
            "http-request",
            &["return", "status", "200", "file", "/etc/passwd"],
        ),
        "env" => backend("http-request", &["set-header", "X", "%[env(HOME)]"]),
        "server" => backend("server", &["meta", "169.254.169.254:80"]),
        "foreign-map-file" => {
            fragment.maps.push(MapFile::new("hosts.map"));
            return;
        }
        other => backend("description", &[other]),
    };
    fragment.sections.push(section);
}

wasmconfd_guest::export!(Misbehave);
