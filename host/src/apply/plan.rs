//! What changed between two renders, from their structure (never by parsing text), and whether
//! HAProxy's Runtime API can apply it without a reload. Pure functions, no I/O.
//!
//! Hitless: only `server` lines of existing backends (added, removed, new address or port, new
//! weight) and entries of existing map files. Anything else needs a reload, and [`Plan::Reload`]
//! says which sections changed.

use crate::bindings::{Directive, MapFile, Section, SectionKind};
use crate::fragment::Fragment;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How to get from the running configuration to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Unchanged,
    /// Runtime API commands, in order.
    Runtime(Vec<Op>),
    /// Why a reload is needed, one reason per changed section or map.
    Reload(Vec<String>),
}

/// One Runtime API change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add server backend/server args...` (then enabled, with its health check).
    AddServer {
        backend: String,
        server: String,
        args: Vec<String>,
    },
    /// Drain and `del server backend/server`.
    DelServer { backend: String, server: String },
    /// `set server backend/server addr ADDRESS port PORT`.
    SetAddr {
        backend: String,
        server: String,
        address: String,
        port: u16,
    },
    /// `set server backend/server weight WEIGHT`.
    SetWeight {
        backend: String,
        server: String,
        weight: String,
    },
    /// `add map FILE KEY VALUE`.
    AddMap {
        file: String,
        key: String,
        value: String,
    },
    /// `set map FILE KEY VALUE`.
    SetMap {
        file: String,
        key: String,
        value: String,
    },
    /// `del map FILE KEY`.
    DelMap { file: String, key: String },
    /// `set ssl cert FILE` with the new PEM, then `commit ssl cert FILE`: a renewed certificate.
    SetCert {
        file: String,
        pem: String,
        serial: String,
    },
    /// `new ssl cert FILE`, set and commit it, then `add ssl crt-list CRT_LIST` with its line.
    NewCert {
        file: String,
        pem: String,
        serial: String,
        line: String,
    },
    /// `del ssl crt-list CRT_LIST FILE`, then `del ssl cert FILE`.
    DelCert { file: String },
}

impl Op {
    /// Every word of the op's commands, each of which must reach HAProxy's CLI as it is.
    pub fn words(&self) -> Vec<&str> {
        match self {
            Op::AddServer {
                backend,
                server,
                args,
            } => [backend, server]
                .into_iter()
                .chain(args)
                .map(String::as_str)
                .collect(),
            Op::DelServer { backend, server } => vec![backend, server],
            Op::SetAddr {
                backend,
                server,
                address,
                ..
            } => vec![backend, server, address],
            Op::SetWeight {
                backend,
                server,
                weight,
            } => vec![backend, server, weight],
            Op::AddMap { file, key, value } | Op::SetMap { file, key, value } => {
                vec![file, key, value]
            }
            Op::DelMap { file, key } => vec![file, key],
            Op::SetCert { file, .. } | Op::NewCert { file, .. } | Op::DelCert { file } => {
                vec![file]
            }
        }
    }
}

/// The Runtime API command that makes the change (adding a server also enables it; deleting
/// one first puts it in maintenance).
impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::AddServer {
                backend,
                server,
                args,
            } => write!(f, "add server {backend}/{server} {}", args.join(" ")),
            Op::DelServer { backend, server } => write!(f, "del server {backend}/{server}"),
            Op::SetAddr {
                backend,
                server,
                address,
                port,
            } => write!(
                f,
                "set server {backend}/{server} addr {address} port {port}"
            ),
            Op::SetWeight {
                backend,
                server,
                weight,
            } => write!(f, "set server {backend}/{server} weight {weight}"),
            Op::AddMap { file, key, value } => write!(f, "add map {file} {key} {value}"),
            Op::SetMap { file, key, value } => write!(f, "set map {file} {key} {value}"),
            Op::DelMap { file, key } => write!(f, "del map {file} {key}"),
            Op::SetCert { file, serial, .. } => {
                write!(f, "set ssl cert {file} (serial {serial})")
            }
            Op::NewCert { file, serial, .. } => {
                write!(f, "new ssl cert {file} (serial {serial})")
            }
            Op::DelCert { file } => write!(f, "del ssl cert {file}"),
        }
    }
}

impl Plan {
    /// This plan with the certificate changes of [`certificates`]: a Runtime API change when
    /// both are, a reload when either needs one.
    pub fn with_certificates(self, certificates: Result<Vec<Op>, String>) -> Plan {
        match (self, certificates) {
            (Plan::Reload(mut reasons), Err(reason)) => {
                reasons.push(reason);
                Plan::Reload(reasons)
            }
            (reload @ Plan::Reload(_), Ok(_)) => reload,
            (_, Err(reason)) => Plan::Reload(vec![reason]),
            (Plan::Unchanged, Ok(ops)) if ops.is_empty() => Plan::Unchanged,
            (Plan::Unchanged, Ok(ops)) => Plan::Runtime(ops),
            (Plan::Runtime(mut before), Ok(ops)) => {
                before.extend(ops);
                Plan::Runtime(before)
            }
        }
    }
}

/// The Runtime API changes from the certificate files HAProxy loaded (`old`, the certificates
/// directory as [`crate::tls::Certificates::files`] writes it) to `new`: renewed, added and
/// removed certificates. A certificate whose names changed, or a new default certificate
/// `file`, needs a reload (why, as the error).
pub fn certificates(old: &[(String, String)], new: &[(String, String)]) -> Result<Vec<Op>, String> {
    use crate::tls::{CRT_LIST, DEFAULT_FILE};
    if old == new {
        return Ok(Vec::new());
    }
    let lines = |files: &[(String, String)]| -> BTreeMap<String, String> {
        let list = files.iter().find(|(name, _)| name == CRT_LIST);
        list.map(|(_, text)| text.as_str())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| Some((line.split(' ').next()?.to_string(), line.to_string())))
            .collect()
    };
    let contents = |files: &[(String, String)], name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, text)| text.clone())
    };
    let path = |name: &str| format!("{}/{name}", crate::assemble::CERTS_DIR);
    let serial = |pem: &str| {
        crate::tls::read(pem.as_bytes(), pem.as_bytes())
            .map(|pair| pair.serial)
            .map_err(|e| format!("a certificate to install does not read back: {e}"))
    };
    let mut ops = Vec::new();
    let (before, after) = (lines(old), lines(new));
    match (contents(old, DEFAULT_FILE), contents(new, DEFAULT_FILE)) {
        (Some(a), Some(b)) if a != b => ops.push(Op::SetCert {
            file: path(DEFAULT_FILE),
            serial: serial(&b)?,
            pem: b,
        }),
        (Some(_), Some(_)) => {}
        _ => return Err("the default certificate is new".into()),
    }
    for (file, line) in &before {
        match after.get(file) {
            None => ops.push(Op::DelCert { file: file.clone() }),
            Some(new_line) if new_line != line => {
                return Err(format!("certificate {file} is for other names"));
            }
            Some(_) => {}
        }
    }
    for (file, line) in &after {
        let name = file.rsplit('/').next().unwrap_or_default();
        let pem = contents(new, name).ok_or_else(|| format!("certificate {file} is missing"))?;
        match before.get(file) {
            None => ops.push(Op::NewCert {
                file: file.clone(),
                serial: serial(&pem)?,
                pem,
                line: line.clone(),
            }),
            Some(_) if contents(old, name).as_ref() != Some(&pem) => ops.push(Op::SetCert {
                file: file.clone(),
                serial: serial(&pem)?,
                pem,
            }),
            Some(_) => {}
        }
    }
    Ok(ops)
}

/// Converters whose lookup does not depend on the order of the map's entries.
const ORDER_FREE: [&str; 4] = ["map(", "map_str(", "map_int(", "map_ip("];

/// Compare the fragments HAProxy runs (`old`, one per guest, in order) with new ones. Map files
/// are referenced as `<maps_dir>/<name>`.
pub fn plan(old: &[Fragment], new: &[Fragment], maps_dir: &str) -> Plan {
    if old == new {
        return Plan::Unchanged;
    }
    if old.len() != new.len() {
        return Plan::Reload(vec!["the set of guests changed".into()]);
    }
    let mut ops = Vec::new();
    let mut reasons = Vec::new();
    for (old, new) in old.iter().zip(new) {
        sections(&old.sections, &new.sections, &mut ops, &mut reasons);
        maps(old, new, maps_dir, &mut ops, &mut reasons);
    }
    let adds_servers = ops.iter().any(|op| matches!(op, Op::AddServer { .. }));
    if adds_servers && defaults_set_server_options(new) {
        reasons.push(
            "servers were added, and a `defaults` section has `default-server` options, \
             which HAProxy does not give to servers added at runtime"
                .into(),
        );
    }
    if !reasons.is_empty() {
        return Plan::Reload(reasons);
    }
    // New servers take traffic before old ones leave, so a backend whose endpoints all moved
    // is never empty.
    ops.sort_by_key(|op| match op {
        Op::AddServer { .. } => 0,
        Op::DelServer { .. } => 2,
        _ => 1,
    });
    Plan::Runtime(ops)
}

fn defaults_set_server_options(fragments: &[Fragment]) -> bool {
    fragments
        .iter()
        .flat_map(|f| &f.sections)
        .filter(|s| s.kind == SectionKind::Defaults)
        .flat_map(|s| &s.directives)
        .any(|d| d.keyword() == "default-server")
}

fn sections(
    old: &[Arc<Section>],
    new: &[Arc<Section>],
    ops: &mut Vec<Op>,
    reasons: &mut Vec<String>,
) {
    if old.len() != new.len() || !old.iter().zip(new).all(|(a, b)| a.same_title(b)) {
        let names = |sections: &[Arc<Section>]| sections.iter().map(|s| s.title()).collect();
        let (before, after): (Vec<String>, Vec<String>) = (names(old), names(new));
        let listed = |names: Vec<&String>| {
            let names: Vec<_> = names.iter().map(|n| format!("`{n}`")).collect();
            names.join(", ")
        };
        let set = |names: &[String]| names.iter().cloned().collect::<BTreeSet<_>>();
        let (before_set, after_set) = (set(&before), set(&after));
        let added: Vec<_> = after.iter().filter(|n| !before_set.contains(*n)).collect();
        let removed: Vec<_> = before.iter().filter(|n| !after_set.contains(*n)).collect();
        let mut what = Vec::new();
        if !added.is_empty() {
            what.push(format!("added {}", listed(added)));
        }
        if !removed.is_empty() {
            what.push(format!("removed {}", listed(removed)));
        }
        if what.is_empty() {
            what.push("reordered".into());
        }
        reasons.push(format!("sections {}", what.join("; ")));
        return;
    }
    // Most sections are the very ones installed (shared with the last output): nothing to do.
    for (old, new) in old
        .iter()
        .zip(new)
        .filter(|(old, new)| !Arc::ptr_eq(old, new))
    {
        if not_servers(old).ne(not_servers(new)) {
            reasons.push(format!("section `{}` changed", new.title()));
            continue;
        }
        let has_servers = new.kind.has_servers();
        if has_servers {
            servers(
                new.name.as_deref().unwrap_or_default(),
                old,
                new,
                ops,
                reasons,
            );
        } else if old != new {
            reasons.push(format!("section `{}` changed", new.title()));
        }
    }
}

/// The directives of `section` other than its `server` lines.
fn not_servers(section: &Section) -> impl Iterator<Item = &Directive> {
    (section.directives.iter()).filter(|d| d.keyword() != "server")
}

/// `server` lines by name: name -> (address, the other arguments).
fn server_lines(section: &Section) -> Option<BTreeMap<&str, (&str, Vec<&str>)>> {
    let mut servers = BTreeMap::new();
    for directive in (section.directives.iter()).filter(|d| d.keyword() == "server") {
        let mut args = directive.args();
        let (Some(name), Some(address)) = (args.next(), args.next()) else {
            return None;
        };
        if servers.insert(name, (address, args.collect())).is_some() {
            return None;
        }
    }
    Some(servers)
}

fn servers(
    backend: &str,
    old: &Section,
    new: &Section,
    ops: &mut Vec<Op>,
    reasons: &mut Vec<String>,
) {
    let (Some(before), Some(after)) = (server_lines(old), server_lines(new)) else {
        reasons.push(format!(
            "backend {backend}: server lines without a name and address, or a name twice"
        ));
        return;
    };
    let id = |server: &str| (backend.to_string(), server.to_string());
    // HAProxy gives a server added at runtime none of the backend's `default-server` options.
    let defaults: Vec<String> = new
        .directives
        .iter()
        .filter(|d| d.keyword() == "default-server")
        .flat_map(|d| d.args().map(String::from))
        .collect();
    for server in before.keys().filter(|s| !after.contains_key(*s)) {
        let (backend, server) = id(server);
        ops.push(Op::DelServer { backend, server });
    }
    for (server, (address, rest)) in &after {
        let Some((old_address, old_rest)) = before.get(server) else {
            let (backend, server) = id(server);
            let args = std::iter::once(address.to_string())
                .chain(defaults.iter().cloned())
                .chain(rest.iter().map(|arg| arg.to_string()))
                .collect();
            ops.push(Op::AddServer {
                backend,
                server,
                args,
            });
            continue;
        };
        let (new, old) = ((*address, &rest[..]), (*old_address, &old_rest[..]));
        changed_server(backend, server, new, old, ops, reasons);
    }
}

/// The operations that change `server` of `backend` from its old (address, options) to its
/// new ones, or why the Runtime API cannot.
fn changed_server(
    backend: &str,
    server: &str,
    (address, rest): (&str, &[&str]),
    (old_address, old_rest): (&str, &[&str]),
    ops: &mut Vec<Op>,
    reasons: &mut Vec<String>,
) {
    let (backend_name, server_name) = (backend.to_string(), server.to_string());
    if address != old_address {
        match split_address(address) {
            Some((ip, port)) => ops.push(Op::SetAddr {
                backend: backend_name.clone(),
                server: server_name.clone(),
                address: ip.to_string(),
                port,
            }),
            None => reasons.push(format!("backend {backend}: server {server} has an address the Runtime API cannot set: {address}")),
        }
    }
    if rest != old_rest {
        let (weight, others) = split_weight(rest);
        let (old_weight, old_others) = split_weight(old_rest);
        if others != old_others {
            reasons.push(format!(
                "backend {backend}: server {server} changed options"
            ));
        } else if weight != old_weight {
            ops.push(Op::SetWeight {
                backend: backend_name,
                server: server_name,
                weight: weight.unwrap_or("1").to_string(),
            });
        }
    }
}

/// `10.0.0.1:80` or `[fd00::1]:80` -> (address, port).
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>().ok()?;
    Some((host, port.parse().ok()?))
}

/// The `weight N` of server options, and the other options.
fn split_weight<'a>(args: &[&'a str]) -> (Option<&'a str>, Vec<&'a str>) {
    let mut weight = None;
    let mut others = Vec::new();
    let mut words = args.iter().copied();
    while let Some(word) = words.next() {
        if word == "weight" {
            weight = words.next();
        } else {
            others.push(word);
        }
    }
    (weight, others)
}

fn maps(
    old: &Fragment,
    new: &Fragment,
    maps_dir: &str,
    ops: &mut Vec<Op>,
    reasons: &mut Vec<String>,
) {
    let names = |f: &Fragment| f.maps.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        reasons.push(format!(
            "map files changed: {:?} -> {:?}",
            names(old),
            names(new)
        ));
        return;
    }
    for (old_map, new_map) in old.maps.iter().zip(&new.maps) {
        if old_map != new_map {
            let file = format!("{maps_dir}/{}", new_map.name);
            match map_ops(&file, old_map, new_map, order_free(new, &file)) {
                Ok(changes) => ops.extend(changes),
                Err(reason) => reasons.push(reason),
            }
        }
    }
}

/// The operations that turn `old` into `new` (map file `file`), or why the Runtime API cannot:
/// unless the map's lookups ignore the order of entries (`order_free`), new entries must come
/// after the kept ones, as entries added at runtime go to the end.
fn map_ops(file: &str, old: &MapFile, new: &MapFile, order_free: bool) -> Result<Vec<Op>, String> {
    let (old_keys, new_keys) = (keys(old), keys(new));
    let unique = |keys: &[&str]| keys.iter().collect::<BTreeSet<_>>().len() == keys.len();
    if !unique(&old_keys) || !unique(&new_keys) {
        return Err(format!("map {file}: a key appears twice"));
    }
    if !order_free {
        let kept_old: Vec<_> = old_keys.iter().filter(|k| new_keys.contains(k)).collect();
        let kept_new: Vec<_> = new_keys.iter().take(kept_old.len()).collect();
        if kept_old != kept_new {
            return Err(format!(
                "map {file}: entries changed order, and its lookups take the first match"
            ));
        }
    }
    let entries = |map: &'_ MapFile| -> BTreeMap<String, String> {
        map.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    };
    let (before, after) = (entries(old), entries(new));
    let mut ops = Vec::new();
    for key in old_keys.iter().filter(|k| !after.contains_key(**k)) {
        let (file, key) = (file.to_string(), key.to_string());
        ops.push(Op::DelMap { file, key });
    }
    for entry in &new.entries {
        let (file, key, value) = (file.to_string(), entry.key.clone(), entry.value.clone());
        match before.get(&entry.key) {
            None => ops.push(Op::AddMap { file, key, value }),
            Some(old_value) if *old_value != entry.value => {
                ops.push(Op::SetMap { file, key, value })
            }
            Some(_) => {}
        }
    }
    Ok(ops)
}

/// The keys of a map file, in order.
fn keys(map: &MapFile) -> Vec<&str> {
    map.entries.iter().map(|e| e.key.as_str()).collect()
}

/// Whether every use of `file` in `fragment` is a lookup that ignores the order of entries.
fn order_free(fragment: &Fragment, file: &str) -> bool {
    let uses = fragment
        .sections
        .iter()
        .flat_map(|s| &s.directives)
        .flat_map(|d| d.args())
        .flat_map(|arg| arg.match_indices(file).map(move |(at, _)| &arg[..at]));
    uses.into_iter().all(|before| {
        ORDER_FREE
            .iter()
            .any(|converter| before.ends_with(converter))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::MapEntry;

    fn backend(name: &str, servers: &[(&str, &str)], extra: &[&str]) -> Section {
        let mut directives = vec![Directive::new("mode", ["http"])];
        for (server, address) in servers {
            let args = [*server, *address, "check"]
                .into_iter()
                .chain(extra.iter().copied());
            directives.push(Directive::new("server", args));
        }
        Section {
            kind: SectionKind::Backend,
            name: Some(name.into()),
            directives,
        }
    }

    fn fragment(sections: Vec<Section>, map: &[(&str, &str)], converter: &str) -> Fragment {
        let mut frontend = Section {
            kind: SectionKind::Frontend,
            name: Some("f".into()),
            directives: Vec::new(),
        };
        frontend.directives.push(Directive::new(
            "use_backend",
            [format!("%[req.hdr(host),{converter}(maps/hosts.map)]")],
        ));
        let entries = map
            .iter()
            .map(|(k, v)| MapEntry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        Fragment::new(
            [vec![frontend], sections].concat(),
            [MapFile {
                name: "hosts.map".into(),
                entries,
            }],
        )
    }

    /// The plan for one guest going from `old` to `new`.
    fn one(old: &Fragment, new: &Fragment) -> Plan {
        plan(std::slice::from_ref(old), std::slice::from_ref(new), "maps")
    }

    fn id(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn scaling_and_moving_servers_is_runtime() {
        let old = fragment(
            vec![backend(
                "web",
                &[("a", "10.0.0.1:80"), ("b", "10.0.0.2:80")],
                &[],
            )],
            &[],
            "map_str",
        );
        let new = fragment(
            vec![backend(
                "web",
                &[("b", "10.0.0.9:8080"), ("c", "10.0.0.3:80")],
                &[],
            )],
            &[],
            "map_str",
        );
        assert_eq!(
            one(&old, &new),
            Plan::Runtime(vec![
                Op::AddServer {
                    backend: id("web"),
                    server: id("c"),
                    args: vec![id("10.0.0.3:80"), id("check")]
                },
                Op::SetAddr {
                    backend: id("web"),
                    server: id("b"),
                    address: id("10.0.0.9"),
                    port: 8080
                },
                Op::DelServer {
                    backend: id("web"),
                    server: id("a")
                },
            ])
        );
        assert_eq!(one(&old, &old), Plan::Unchanged);
    }

    #[test]
    fn added_servers_carry_the_backends_default_server_options() {
        let with_defaults = |servers: &[(&str, &str)]| {
            let mut web = backend("web", servers, &[]);
            web.directives
                .insert(1, Directive::new("default-server", ["inter", "2s"]));
            fragment(vec![web], &[], "map_str")
        };
        let old = with_defaults(&[]);
        let new = with_defaults(&[("a", "10.0.0.1:80")]);
        assert_eq!(
            one(&old, &new),
            Plan::Runtime(vec![Op::AddServer {
                backend: id("web"),
                server: id("a"),
                args: vec![id("10.0.0.1:80"), id("inter"), id("2s"), id("check")]
            }])
        );

        // Options from a `defaults` section cannot be told apart per backend: reload.
        let defaults = Section {
            kind: SectionKind::Defaults,
            name: None,
            directives: vec![Directive::new("default-server", ["maxconn", "10"])],
        };
        let base = Fragment::new([defaults], []);
        assert!(matches!(
            plan(&[base.clone(), old], &[base, new], "maps"),
            Plan::Reload(r) if r[0].contains("default-server")
        ));
    }

    #[test]
    fn weights_are_runtime_other_server_options_are_not() {
        let old = fragment(
            vec![backend("web", &[("a", "10.0.0.1:80")], &["weight", "10"])],
            &[],
            "map_str",
        );
        let weighted = fragment(
            vec![backend("web", &[("a", "10.0.0.1:80")], &["weight", "20"])],
            &[],
            "map_str",
        );
        assert_eq!(
            one(&old, &weighted),
            Plan::Runtime(vec![Op::SetWeight {
                backend: id("web"),
                server: id("a"),
                weight: id("20")
            }])
        );
        let backup = fragment(
            vec![backend(
                "web",
                &[("a", "10.0.0.1:80")],
                &["weight", "10", "backup"],
            )],
            &[],
            "map_str",
        );
        assert!(
            matches!(one(&old, &backup), Plan::Reload(r) if r[0].contains("server a changed options"))
        );
    }

    #[test]
    fn any_other_change_reloads_and_says_which_section() {
        let old = fragment(
            vec![backend("web", &[("a", "10.0.0.1:80")], &[])],
            &[],
            "map_str",
        );
        let mut changed = old.clone();
        Arc::make_mut(&mut changed.sections[1]).directives[0] = Directive::new("mode", ["tcp"]);
        assert_eq!(
            one(&old, &changed),
            Plan::Reload(vec![id("section `backend web` changed")])
        );
        let added = fragment(
            vec![backend("web", &[], &[]), backend("api", &[], &[])],
            &[],
            "map_str",
        );
        assert!(
            matches!(one(&old, &added), Plan::Reload(r) if r[0] == "sections added `backend api`")
        );
        assert!(matches!(
            plan(
                std::slice::from_ref(&old),
                &[old.clone(), old.clone()],
                "maps"
            ),
            Plan::Reload(_)
        ));
    }

    #[test]
    fn exact_maps_change_entries_at_runtime_in_any_order() {
        let web = || vec![backend("web", &[], &[])];
        let old = fragment(web(), &[("a.test", "web"), ("c.test", "web")], "map_str");
        let new = fragment(web(), &[("a.test", "api"), ("b.test", "web")], "map_str");
        assert_eq!(
            one(&old, &new),
            Plan::Runtime(vec![
                Op::DelMap {
                    file: id("maps/hosts.map"),
                    key: id("c.test")
                },
                Op::SetMap {
                    file: id("maps/hosts.map"),
                    key: id("a.test"),
                    value: id("api")
                },
                Op::AddMap {
                    file: id("maps/hosts.map"),
                    key: id("b.test"),
                    value: id("web")
                },
            ])
        );
    }

    #[test]
    fn first_match_maps_take_runtime_additions_only_at_the_end() {
        let web = || vec![backend("web", &[], &[])];
        let old = fragment(web(), &[(".a.test", "web"), (".b.test", "web")], "map_end");
        let appended = fragment(
            web(),
            &[(".a.test", "web"), (".b.test", "web"), (".c.test", "web")],
            "map_end",
        );
        assert!(matches!(one(&old, &appended), Plan::Runtime(ops) if ops.len() == 1));
        let inserted = fragment(
            web(),
            &[(".c.test", "web"), (".a.test", "web"), (".b.test", "web")],
            "map_end",
        );
        assert!(matches!(one(&old, &inserted), Plan::Reload(r) if r[0].contains("first match")));
    }

    #[test]
    fn addresses_split_for_the_runtime_api() {
        assert_eq!(split_address("10.0.0.1:80"), Some(("10.0.0.1", 80)));
        assert_eq!(split_address("[fd00::1]:443"), Some(("fd00::1", 443)));
        assert_eq!(split_address("db.example.com:5432"), None);
    }
}
