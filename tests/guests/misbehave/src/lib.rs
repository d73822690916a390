//! A guest that misbehaves on purpose, to test the host's sandbox and limits. The setting
//! `mode` picks the misbehaviour:
//!
//! - `loop`: never returns; `alloc`: allocates without bound; `panic`: panics;
//! - `newline`: returns an argument with a newline; `bad-name`: a section name with a space;
//! - `error`: returns a render error; `probe`: reports what it can see of the outside world;
//! - `maps`: 101 map files, one more than a render may return; `log`: logs 2 MiB;
//! - `listen`: a `listen misbehave` section on the setting `bind` (default `:80`) answering
//!   every HTTP request with `misbehave`, as a guest trying to take another guest's port;
//! - anything else: a small valid backend.
//!
//! A service annotated `misbehave.wasmconfd.io/do: panic` makes it panic, and `invalid` makes it
//! return a directive HAProxy rejects, whatever the mode: a guest that breaks on live input.

use wasmconfd_guest::{Cluster, Fragment, Guest, RenderError, Section};

struct Misbehave;

impl Guest for Misbehave {
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

wasmconfd_guest::export!(Misbehave);
