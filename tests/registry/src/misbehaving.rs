//! A registry that misbehaves on purpose, over plain HTTP on 127.0.0.1: it serves one unsigned
//! Wasm artifact (repository `team/guest`, tag `v1`) correctly, or hangs, or sends endless
//! bytes for the component, or names a huge component in its manifest ([`Behaviour`]), as the
//! test says at any moment. It counts the bytes of component it managed to send.

use sha2::Digest as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How the registry answers from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Serve the artifact as it is.
    Good,
    /// Accept connections and never answer.
    Hang,
    /// Send bytes without end for the component (its manifest names its real size).
    EndlessBlob,
    /// A manifest naming a component of 2 GiB.
    HugeManifestSize,
    /// Send bytes without end for the manifest (when asked for it by digest).
    EndlessManifest,
    /// Send bytes without end for the signatures' manifest.
    EndlessSignature,
}

pub struct Misbehaving {
    port: u16,
    behaviour: Arc<Mutex<Behaviour>>,
    sent: Arc<AtomicU64>,
}

impl Misbehaving {
    /// Serve `wasm` as `team/guest:v1`.
    pub fn start(wasm: Vec<u8>) -> Misbehaving {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let behaviour = Arc::new(Mutex::new(Behaviour::Good));
        let sent = Arc::new(AtomicU64::new(0));
        let artifact = Arc::new(Artifact::new(wasm));
        let (shared, counter) = (behaviour.clone(), sent.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (behaviour, sent, artifact) =
                    (shared.clone(), counter.clone(), artifact.clone());
                std::thread::spawn(move || {
                    let now = *behaviour.lock().unwrap();
                    answer(stream, now, &artifact, &sent);
                });
            }
        });
        Misbehaving {
            port,
            behaviour,
            sent,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Bytes sent so far for the component and for endless answers.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

struct Artifact {
    wasm: Vec<u8>,
    config: Vec<u8>,
}

impl Artifact {
    fn new(wasm: Vec<u8>) -> Artifact {
        Artifact {
            wasm,
            config: b"{}".to_vec(),
        }
    }

    fn manifest(&self, size: u64) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.wasm.config.v0+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/wasm","digest":"{}","size":{size}}}]}}"#,
            digest(&self.config),
            self.config.len(),
            digest(&self.wasm),
        )
        .into_bytes()
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn answer(mut stream: TcpStream, behaviour: Behaviour, artifact: &Artifact, sent: &AtomicU64) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        request.push_str(&line);
        line.clear();
    }
    if behaviour == Behaviour::Hang {
        std::thread::sleep(std::time::Duration::from_secs(600));
        return;
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let size = match behaviour {
        Behaviour::HugeManifestSize => 2 << 30,
        _ => artifact.wasm.len() as u64,
    };
    let manifest = artifact.manifest(size);
    let respond = |stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Docker-Content-Digest: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            digest(body)
        );
        let _ = stream.write_all(head.as_bytes());
        if method != "HEAD" {
            let _ = stream.write_all(body);
        }
    };
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let by_digest = path == format!("/v2/team/guest/manifests/{}", digest(&manifest));
    let signatures = path.starts_with("/v2/team/guest/manifests/sha256-");
    let endless = method == "GET"
        && ((behaviour == Behaviour::EndlessManifest && by_digest)
            || (behaviour == Behaviour::EndlessSignature && signatures));
    let octets = "application/octet-stream";
    if endless {
        send_endlessly(&mut stream, manifest_type, sent);
    } else if path == "/v2/" {
        respond(&mut stream, "200 OK", "application/json", b"{}");
    } else if path == "/v2/team/guest/manifests/v1" || by_digest {
        respond(&mut stream, "200 OK", manifest_type, &manifest);
    } else if path == format!("/v2/team/guest/blobs/{}", digest(&artifact.config)) {
        respond(&mut stream, "200 OK", octets, &artifact.config);
    } else if path == format!("/v2/team/guest/blobs/{}", digest(&artifact.wasm)) {
        if behaviour == Behaviour::EndlessBlob {
            send_endlessly(&mut stream, octets, sent);
        } else {
            sent.fetch_add(artifact.wasm.len() as u64, Ordering::Relaxed);
            respond(&mut stream, "200 OK", octets, &artifact.wasm);
        }
    } else {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        respond(&mut stream, "404 Not Found", "application/json", body);
    }
}

/// An answer of type `kind` whose body goes on until the client hangs up (or 2 GiB went),
/// counted in `sent`.
fn send_endlessly(stream: &mut TcpStream, kind: &str, sent: &AtomicU64) {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    let chunk = vec![b' '; 64 << 10];
    while stream.write_all(&chunk).is_ok() {
        if sent.fetch_add(chunk.len() as u64, Ordering::Relaxed) > 2 << 30 {
            break;
        }
    }
}
