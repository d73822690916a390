//! HAProxy's Runtime API: applying [`Op`]s on the admin socket and reading back what HAProxy
//! holds, to check that it is what was meant.

use crate::apply::plan::Op;
use crate::bindings::SectionKind;
use crate::fragment::Fragment;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot talk to HAProxy on {socket}: {error}")]
    Io {
        socket: String,
        error: std::io::Error,
    },
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("cannot send {0:?} through the Runtime API: it holds whitespace, `;` or `\\`")]
    Unsendable(String),
    #[error("HAProxy does not hold what was applied: {0}")]
    Mismatch(String),
}

/// One command on an HAProxy CLI socket (admin or master); its answer, up to the closing of the
/// connection.
pub fn command(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}; quit\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// One command with a payload (`COMMAND <<`, the payload's lines, an empty line); its answer.
fn command_with_payload(socket: &Path, command: &str, payload: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command} <<\n{}\n\n", payload.trim_end()).as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Send `command` with `payload`; the answer must contain `expected`. The payload must hold no
/// empty line, which would end it.
fn send_payload(
    socket: &Path,
    command_line: &str,
    payload: &str,
    expected: &str,
) -> Result<String, RuntimeError> {
    if payload.trim_end().contains("\n\n") {
        return Err(RuntimeError::Unsendable(format!(
            "the payload of `{command_line}`"
        )));
    }
    let answer = command_with_payload(socket, command_line, payload);
    expect(socket, command_line, answer, expected)
}

/// Send `command`; the answer must contain `expected` (empty: any answer).
fn send(socket: &Path, command_line: &str, expected: &str) -> Result<String, RuntimeError> {
    expect(
        socket,
        command_line,
        command(socket, command_line),
        expected,
    )
}

/// The `answer` to `command_line` on `socket`, if it came and contains `expected`.
fn expect(
    socket: &Path,
    command_line: &str,
    answer: std::io::Result<String>,
    expected: &str,
) -> Result<String, RuntimeError> {
    let answer = answer.map_err(|error| RuntimeError::Io {
        socket: socket.display().to_string(),
        error,
    })?;
    if answer.contains(expected) {
        Ok(answer)
    } else {
        Err(RuntimeError::Refused {
            command: command_line.to_string(),
            answer: answer.trim().to_string(),
        })
    }
}

/// A word the CLI reads back as it is.
fn word(text: &str) -> Result<&str, RuntimeError> {
    let plain = !text.is_empty()
        && !text.contains(|c: char| c.is_whitespace() || c == ';' || c == '\\' || c.is_control());
    if plain {
        Ok(text)
    } else {
        Err(RuntimeError::Unsendable(text.to_string()))
    }
}

/// A server by backend and name.
pub type ServerName = (String, String);

/// Apply `ops` in order, stopping at the first that HAProxy refuses. A server to delete that
/// still has connections (a long download, a websocket) stays disabled, taking no new traffic,
/// until they end: those are returned, for [`delete`] to remove later.
pub fn apply(socket: &Path, ops: &[Op]) -> Result<Vec<ServerName>, RuntimeError> {
    let mut draining = Vec::new();
    for op in ops {
        for text in op.words() {
            word(text)?;
        }
        let command = op.to_string();
        match op {
            Op::AddServer {
                backend,
                server,
                args,
            } => {
                // A new server starts in maintenance, its health check off.
                send(socket, &command, "New server registered")?;
                send(socket, &format!("enable server {backend}/{server}"), "")?;
                if args.iter().any(|a| a == "check") {
                    send(socket, &format!("enable health {backend}/{server}"), "")?;
                }
            }
            Op::DelServer { backend, server } => {
                send(socket, &format!("disable server {backend}/{server}"), "")?;
                if !delete(socket, backend, server)? {
                    draining.push((backend.clone(), server.clone()));
                }
            }
            Op::SetCert { file, pem, serial } => set_certificate(socket, file, pem, serial)?,
            Op::NewCert {
                file,
                pem,
                serial,
                line,
            } => {
                send(
                    socket,
                    &format!("new ssl cert {file}"),
                    "New empty certificate",
                )?;
                set_certificate(socket, file, pem, serial)?;
                let add = format!("add ssl crt-list {}", crt_list());
                send_payload(socket, &add, line, "Success!")?;
            }
            Op::DelCert { file } => {
                let del = format!("del ssl crt-list {} {file}", crt_list());
                send(socket, &del, "deleted")?;
                send(socket, &format!("del ssl cert {file}"), "deleted")?;
            }
            _ => {
                send(socket, &command, "")?;
            }
        }
    }
    Ok(draining)
}

/// The crt-list's path as HAProxy knows it.
fn crt_list() -> String {
    format!("{}/{}", crate::assemble::CERTS_DIR, crate::tls::CRT_LIST)
}

/// Replace the certificate HAProxy knows as `file` with `pem` (`set` and `commit`), and read
/// back that it serves the one with `serial`.
fn set_certificate(socket: &Path, file: &str, pem: &str, serial: &str) -> Result<(), RuntimeError> {
    send_payload(socket, &format!("set ssl cert {file}"), pem, "Transaction")?;
    send(socket, &format!("commit ssl cert {file}"), "Success!")?;
    let shown = send(socket, &format!("show ssl cert {file}"), "Serial:")?;
    let held = shown
        .lines()
        .find_map(|line| line.strip_prefix("Serial:"))
        .map(|s| s.trim().trim_start_matches('0').to_ascii_lowercase())
        .unwrap_or_default();
    if held != serial {
        return Err(RuntimeError::Mismatch(format!(
            "certificate {file}: serial {held}, not {serial}"
        )));
    }
    Ok(())
}

/// `del server BACKEND/SERVER` of a disabled server: false while it still has connections.
pub fn delete(socket: &Path, backend: &str, server: &str) -> Result<bool, RuntimeError> {
    let command = format!("del server {}/{}", word(backend)?, word(server)?);
    let answer = send(socket, &command, "")?;
    if answer.contains("Server deleted") {
        Ok(true)
    } else if answer.contains("Server still has connections attached to it") {
        Ok(false)
    } else {
        Err(RuntimeError::Refused {
            command,
            answer: answer.trim().to_string(),
        })
    }
}

/// The servers HAProxy holds, as `backend -> server -> address:port`, from one
/// `show servers state`.
pub fn servers(socket: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>, RuntimeError> {
    let answer = send(socket, "show servers state", "")?;
    // `be_id be_name srv_id srv_name srv_addr ... srv_port (19th)`
    let mut backends: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in answer.lines().filter(|line| !line.starts_with('#')) {
        let words: Vec<_> = line.split_whitespace().collect();
        if words.len() <= 18 {
            continue;
        }
        let address = if words[4].contains(':') {
            format!("[{}]", words[4])
        } else {
            words[4].to_string()
        };
        backends
            .entry(words[1].to_string())
            .or_default()
            .insert(words[3].to_string(), format!("{address}:{}", words[18]));
    }
    Ok(backends)
}

/// The entries HAProxy holds in map `file`, as `(key, value)` in its order.
pub fn map_entries(socket: &Path, file: &str) -> Result<Vec<(String, String)>, RuntimeError> {
    let answer = send(socket, &format!("show map {}", word(file)?), "")?;
    // `0x55d0c7b0 key value`
    let entries = answer
        .lines()
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            let (_, key, value) = (words.next()?, words.next()?, words.next()?);
            Some((key.to_string(), value.to_string()))
        })
        .collect();
    Ok(entries)
}

/// Check that HAProxy holds the servers and map entries of `fragments`: every server of every
/// backend at its address, besides the `draining` ones, and every map's entries (as a set).
pub fn verify(
    socket: &Path,
    fragments: &[Fragment],
    maps_dir: &str,
    draining: &BTreeSet<ServerName>,
) -> Result<(), RuntimeError> {
    let held_servers = servers(socket)?;
    for fragment in fragments {
        for section in &fragment.sections {
            let (Some(backend), SectionKind::Backend | SectionKind::Listen) =
                (&section.name, section.kind)
            else {
                continue;
            };
            // Servers on sockets (`abns@name`, `unix@path`) are never changed at runtime, and
            // HAProxy shows no address for them.
            let (meant, on_sockets): (BTreeSet<(String, String)>, BTreeSet<_>) = section
                .directives
                .iter()
                .filter(|d| d.keyword() == "server")
                .filter_map(|d| Some((d.arg(0)?.to_string(), d.arg(1)?.to_string())))
                .partition(|(_, address)| address.contains(':') && !address.contains('@'));
            let held = held_servers.get(backend).cloned().unwrap_or_default();
            let held = held
                .into_iter()
                .filter(|(server, _)| !draining.contains(&(backend.clone(), server.clone())))
                .filter(|(server, _)| !on_sockets.iter().any(|(name, _)| name == server))
                .collect();
            compare(&format!("backend {backend}"), held, meant)?;
        }
        for map in &fragment.maps {
            let file = format!("{maps_dir}/{}", map.name);
            let meant = map
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            let held = map_entries(socket, &file)?.into_iter().collect();
            compare(&format!("map {file}"), held, meant)?;
        }
    }
    Ok(())
}

/// `held` and `meant` of `what` are the same, or a mismatch naming the differences.
fn compare(
    what: &str,
    held: BTreeSet<(String, String)>,
    meant: BTreeSet<(String, String)>,
) -> Result<(), RuntimeError> {
    if held == meant {
        return Ok(());
    }
    let missing: Vec<_> = meant.difference(&held).collect();
    let extra: Vec<_> = held.difference(&meant).collect();
    Err(RuntimeError::Mismatch(format!(
        "{what}: missing {missing:?}, not meant {extra:?}"
    )))
}
/// Delete each of the `draining` servers whose connections have ended; those left.
pub fn delete_drained(
    socket: &Path,
    draining: &std::collections::BTreeSet<ServerName>,
) -> std::collections::BTreeSet<ServerName> {
    let left = |(backend, server): &&ServerName| match delete(socket, backend, server) {
        Ok(true) => {
            tracing::info!(backend, server, "drained server deleted");
            false
        }
        Ok(false) => true,
        Err(error) => {
            tracing::warn!(%error, "cannot delete a drained server; it stays in maintenance until the next reload");
            false
        }
    };
    draining.iter().filter(left).cloned().collect()
}

/// The admin socket the configuration opens: `stats socket PATH ...` in `global`, with an
/// absolute path.
pub fn admin_socket(fragments: &[Fragment]) -> Option<std::path::PathBuf> {
    fragments
        .iter()
        .flat_map(|f| &f.sections)
        .filter(|s| s.kind == crate::bindings::SectionKind::Global)
        .flat_map(|s| &s.directives)
        .filter(|d| d.keyword() == "stats" && d.arg(0) == Some("socket"))
        .filter_map(|d| d.arg(1))
        .map(|path| path.strip_prefix("unix@").unwrap_or(path))
        .find(|path| path.starts_with('/'))
        .map(std::path::PathBuf::from)
}
