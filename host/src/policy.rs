//! What a guest's output may hold, checked as soon as the guest returns it, before anything else
//! uses it. A violation refuses the guest's whole output, naming the section and the rule; the
//! caller then finds the service that causes it (quarantine) or keeps the guest's last good
//! output. Pure: no I/O.
//!
//! Every guest (after [`crate::assemble::check_fragment`], which checks that the host can write
//! it): no keyword starting with `.` (`.if` in one guest and `.endif` in another would span them), and when its
//! scope grants listen ports, `bind` only on those.
//!
//! A `team` guest, deny by default, so that a new HAProxy keyword is not a new escape:
//! - only `backend`, `frontend` and `listen` sections, named `<guest>` or `<guest>-...` (or
//!   `_`, `.`, `:` after the name), and map files named the same way;
//! - only the directives, options, actions, `bind` options and `server` options of the allow
//!   lists below, so nothing that runs programs, loads Lua, reads or writes files, reads the
//!   environment, logs or connects elsewhere passes;
//! - `bind` only on ports its scope grants; `server` only to addresses of its services'
//!   endpoints; `use_backend` and `default_backend` only to its own backends, by name;
//! - map files referenced only if they are its own;
//! - in frontends and map keys, host names only of its services' domains.
//!
//! `docs/multi-tenant.md` has the same rules as a table.

use crate::bindings::{Directive, Section, SectionKind, Service};
use crate::fragment::Fragment;
use crate::scope::{Scope, Trust};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

/// Why a guest's output was refused: the section (when one) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub section: Option<String>,
    pub rule: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.section {
            Some(section) => write!(f, "section `{section}`: {}", self.rule),
            None => f.write_str(&self.rule),
        }
    }
}

/// Check the output `fragment` of guest `guest`, which received `services` (with their
/// endpoints, or without them), against `scope`; its map files are referenced as
/// `<maps_dir>/<name>`.
pub fn check(
    guest: &str,
    scope: &Scope,
    (services, endpoints): (&[Arc<Service>], bool),
    fragment: &Fragment,
    maps_dir: &str,
) -> Result<(), Refusal> {
    let team = (scope.trust == Trust::Team)
        .then(|| Team::new(guest, services, endpoints, fragment, maps_dir));
    for section in &fragment.sections {
        let refuse = |rule: String| Refusal {
            section: Some(section.title()),
            rule,
        };
        if let Some(team) = &team {
            team.section(section).map_err(refuse)?;
        }
        for directive in &section.directives {
            every_guest(scope, directive).map_err(refuse)?;
            if let Some(team) = &team {
                team.directive(section, directive).map_err(refuse)?;
            }
        }
    }
    match &team {
        Some(team) => team.maps(fragment).map_err(|rule| Refusal {
            section: None,
            rule,
        }),
        None => Ok(()),
    }
}

/// The rules for every guest.
fn every_guest(scope: &Scope, directive: &Directive) -> Result<(), String> {
    if directive.keyword().starts_with('.') {
        return Err(format!(
            "`{}`: keywords starting with `.` (conditional blocks, `.notice`, ...) are not \
             allowed in guest output",
            directive.keyword()
        ));
    }
    let limited = scope.listen_ports.is_some() || scope.trust == Trust::Team;
    if directive.keyword() == "bind" && limited {
        let address = directive.arg(0).unwrap_or("");
        for address in address.split(',') {
            let granted = crate::claims::bind_ports(address).is_some_and(|p| scope.may_bind(&p));
            if !granted {
                return Err(format!(
                    "binds {address}, which is not on a port its scope grants (listen-ports)"
                ));
            }
        }
    }
    Ok(())
}

/// Where a directive may appear.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    Any,
    Front,
    Back,
}

/// The directives a team guest may write, and where.
const DIRECTIVES: &[(&str, Where)] = &[
    ("mode", Where::Any),
    ("description", Where::Any),
    ("option", Where::Any),
    ("no option", Where::Any),
    ("timeout", Where::Any),
    ("acl", Where::Any),
    ("http-request", Where::Any),
    ("http-response", Where::Any),
    ("http-after-response", Where::Any),
    ("tcp-request", Where::Any),
    ("tcp-response", Where::Back),
    ("compression", Where::Any),
    ("maxconn", Where::Front),
    ("redirect", Where::Any),
    ("retries", Where::Back),
    ("retry-on", Where::Back),
    ("bind", Where::Front),
    ("use_backend", Where::Front),
    ("default_backend", Where::Front),
    ("capture", Where::Front),
    ("monitor-uri", Where::Front),
    ("balance", Where::Back),
    ("hash-type", Where::Back),
    ("cookie", Where::Back),
    ("server", Where::Back),
    ("default-server", Where::Back),
    ("http-check", Where::Back),
    ("http-reuse", Where::Back),
    ("fullconn", Where::Back),
    ("use-server", Where::Back),
    ("force-persist", Where::Any),
    ("ignore-persist", Where::Any),
];

const OPTIONS: &[&str] = &[
    "abortonclose",
    "allbackups",
    "checkcache",
    "dontlognull",
    "forwardfor",
    "http-buffer-request",
    "http-ignore-probes",
    "http-keep-alive",
    "http-no-delay",
    "http-pretend-keepalive",
    "http-server-close",
    "httpchk",
    "httpclose",
    "httplog",
    "log-health-checks",
    "logasap",
    "nolinger",
    "originalto",
    "prefer-last-server",
    "redis-check",
    "redispatch",
    "ssl-hello-chk",
    "tcp-check",
    "tcpka",
    "clitcpka",
    "srvtcpka",
    "tcplog",
];

/// Actions of `http-request`, `http-response` and `http-after-response` (and `set-var(...)`,
/// `unset-var(...)`, `set-var-fmt(...)`).
const HTTP_ACTIONS: &[&str] = &[
    "add-header",
    "allow",
    "capture",
    "del-header",
    "deny",
    "disable-l7-retry",
    "early-hint",
    "normalize-uri",
    "redirect",
    "reject",
    "replace-header",
    "replace-path",
    "replace-pathq",
    "replace-uri",
    "replace-value",
    "return",
    "set-header",
    "set-log-level",
    "set-method",
    "set-path",
    "set-pathq",
    "set-query",
    "set-status",
    "set-timeout",
    "set-uri",
    "strict-mode",
    "tarpit",
    "wait-for-body",
];

/// Actions of `tcp-request` and `tcp-response` rules (and the `set-var` family).
const TCP_ACTIONS: &[&str] = &[
    "accept",
    "capture",
    "close",
    "expect-proxy",
    "reject",
    "silent-drop",
    "switch-mode",
];

/// Words that make an action read a file.
const FILE_WORDS: &[&str] = &["file", "lf-file", "errorfile", "errorfiles"];

/// `bind` options without and with a value.
const BIND_FLAGS: &[&str] = &["accept-proxy", "defer-accept", "tfo", "v4v6", "v6only"];
const BIND_OPTIONS: &[&str] = &["alpn", "backlog", "maxconn", "mss", "name", "proto"];

/// `server` and `default-server` options without and with a value.
const SERVER_FLAGS: &[&str] = &[
    "backup",
    "check",
    "check-send-proxy",
    "check-ssl",
    "disabled",
    "enabled",
    "no-check",
    "no-check-ssl",
    "no-send-proxy",
    "no-ssl",
    "no-verifyhost",
    "send-proxy",
    "send-proxy-v2",
    "ssl",
    "tfo",
];
const SERVER_OPTIONS: &[&str] = &[
    "alpn",
    "check-alpn",
    "check-proto",
    "check-sni",
    "cookie",
    "downinter",
    "error-limit",
    "fall",
    "fastinter",
    "inter",
    "max-reuse",
    "maxconn",
    "maxqueue",
    "minconn",
    "observe",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "pool-max-conn",
    "pool-purge-delay",
    "port",
    "proto",
    "rise",
    "slowstart",
    "sni",
    "tcp-ut",
    "verify",
    "weight",
    "ws",
];

/// What a team guest's output is checked against.
struct Team<'a> {
    guest: &'a str,
    fragment: &'a Fragment,
    maps_dir: &'a str,
    domains: BTreeSet<&'a str>,
    addresses: BTreeSet<IpAddr>,
    backends: BTreeSet<&'a str>,
    /// Its map files as its configuration references them: `maps/<name>`.
    maps: BTreeSet<String>,
}

impl<'a> Team<'a> {
    fn new(
        guest: &'a str,
        services: &'a [Arc<Service>],
        endpoints: bool,
        fragment: &'a Fragment,
        maps_dir: &'a str,
    ) -> Self {
        Team {
            guest,
            fragment,
            maps_dir,
            domains: services
                .iter()
                .flat_map(|s| s.domains.iter().map(String::as_str))
                .collect(),
            // A guest given its services without their endpoints has none to place servers on.
            addresses: if endpoints {
                (services.iter().flat_map(|s| &s.endpoints))
                    .filter_map(|e| e.address.parse().ok())
                    .collect()
            } else {
                Default::default()
            },
            backends: fragment
                .sections
                .iter()
                .filter(|s| s.kind.has_servers())
                .filter_map(|s| s.name.as_deref())
                .collect(),
            maps: fragment
                .maps
                .iter()
                .map(|m| format!("{maps_dir}/{}", m.name))
                .collect(),
        }
    }

    /// `name` is the guest's own: `<guest>`, or `<guest>` then `-`, `_`, `.` or `:` and more.
    fn owns(&self, name: &str) -> bool {
        name.strip_prefix(self.guest)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_', '.', ':']))
    }

    fn section(&self, section: &Section) -> Result<(), String> {
        if !matches!(
            section.kind,
            SectionKind::Backend | SectionKind::Frontend | SectionKind::Listen
        ) {
            return Err(format!(
                "a team guest may write only backend, frontend and listen sections, not {}",
                section.kind.keyword()
            ));
        }
        match &section.name {
            Some(name) if self.owns(name) => Ok(()),
            _ => Err(format!(
                "a team guest's section names start with its name: `{}` or `{}-...`",
                self.guest, self.guest
            )),
        }
    }

    fn directive(&self, section: &Section, directive: &Directive) -> Result<(), String> {
        let kind = section.kind;
        let keyword = directive.keyword();
        let front = matches!(kind, SectionKind::Frontend | SectionKind::Listen);
        let back = kind.has_servers();
        let allowed = DIRECTIVES.iter().any(|(k, place)| {
            *k == keyword
                && match place {
                    Where::Any => true,
                    Where::Front => front,
                    Where::Back => back,
                }
        });
        if !allowed {
            return Err(format!(
                "`{keyword}` is not on the team allow list for a {} section",
                kind.keyword()
            ));
        }
        let args: &[&str] = &directive.args().collect::<Vec<_>>();
        match keyword {
            "bind" => options(&args[1.min(args.len())..], BIND_FLAGS, BIND_OPTIONS, "bind"),
            "server" => self.server(args),
            "default-server" => options(args, SERVER_FLAGS, SERVER_OPTIONS, "server"),
            "option" | "no option" => match args.first() {
                Some(option) if OPTIONS.contains(option) => Ok(()),
                other => Err(format!(
                    "`option {}` is not on the team allow list",
                    other.copied().unwrap_or("")
                )),
            },
            "http-request" | "http-response" | "http-after-response" => action(args, HTTP_ACTIONS),
            "tcp-request" | "tcp-response" => match args.first().copied() {
                Some("inspect-delay") => Ok(()),
                Some("connection" | "session" | "content") => action(&args[1..], TCP_ACTIONS),
                other => Err(format!(
                    "`{keyword} {}` is not allowed",
                    other.unwrap_or("")
                )),
            },
            "http-check" => match args.first().copied() {
                Some("send" | "expect" | "comment" | "disable-on-404" | "send-state") => Ok(()),
                other => Err(format!(
                    "`http-check {}` is not allowed",
                    other.unwrap_or("")
                )),
            },
            "use_backend" | "default_backend" => self.backend_target(section, keyword, args),
            _ => Ok(()),
        }?;
        for (i, arg) in args.iter().enumerate() {
            self.argument(arg, i.checked_sub(1).map(|p| args[p]), front)?;
        }
        Ok(())
    }

    /// `server NAME ADDRESS[:PORT] OPTIONS...`: the address is an endpoint of its services.
    fn server(&self, args: &[&str]) -> Result<(), String> {
        let address = args.get(1).copied().unwrap_or("");
        if !server_ip(address).is_some_and(|ip| self.addresses.contains(&ip)) {
            return Err(format!(
                "server address {address} is not an endpoint of its services"
            ));
        }
        options(&args[2..], SERVER_FLAGS, SERVER_OPTIONS, "server")
    }

    /// The backend of a `use_backend` in `section`: one of its own by name, or
    /// `%[var(txn.NAME)]` where the section sets `txn.NAME` only from one of its own map files
    /// (the last converter), each of whose values, and the default, is one of its backends.
    fn backend_target(
        &self,
        section: &Section,
        keyword: &str,
        args: &[&str],
    ) -> Result<(), String> {
        let target = args.first().copied().unwrap_or("");
        let routed_by_own_map = target
            .strip_prefix("%[var(")
            .and_then(|rest| rest.strip_suffix(")]"))
            .is_some_and(|var| self.set_from_own_map(section, var));
        if self.backends.contains(target) || routed_by_own_map {
            Ok(())
        } else {
            Err(format!(
                "`{keyword} {target}`: a team guest routes only to its own backends, by name or \
                 through a variable set from its own map of them"
            ))
        }
    }

    /// Whether every rule of `section` that sets `var` sets it to a lookup in an own map whose
    /// values (and default) all name its backends, and there is at least one.
    fn set_from_own_map(&self, section: &Section, var: &str) -> bool {
        let exact = format!("set-var({var})");
        let mut setters = 0;
        for args in section
            .directives
            .iter()
            .map(|d| d.args().collect::<Vec<_>>())
        {
            for (i, arg) in args.iter().enumerate() {
                if !arg.contains(var) || !arg.contains("set-var") {
                    continue;
                }
                let lookup = args.get(i + 1).and_then(|e| last_converter(e));
                let Some((file, default)) = lookup.and_then(map_lookup) else {
                    return false;
                };
                let values_ok = self
                    .map_values(file)
                    .is_some_and(|mut values| values.all(|v| self.backends.contains(v)));
                if *arg != exact
                    || !values_ok
                    || default.is_some_and(|d| !self.backends.contains(d))
                {
                    return false;
                }
                setters += 1;
            }
        }
        setters > 0
    }

    /// The values of own map file `path` (`maps/<name>`).
    fn map_values(&self, path: &str) -> Option<impl Iterator<Item = &str>> {
        let name = path.strip_prefix(self.maps_dir)?.strip_prefix('/')?;
        let map = self.fragment.maps.iter().find(|m| m.name == name)?;
        Some(map.entries.iter().map(|e| e.value.as_str()))
    }

    /// One argument (after `previous`), wherever it appears.
    fn argument(&self, arg: &str, previous: Option<&str>, front: bool) -> Result<(), String> {
        if arg.contains("lua.") || arg.contains("env(") {
            return Err(format!(
                "argument {arg:?}: Lua and the environment are not for team guests"
            ));
        }
        if matches!(previous, Some("-f" | "-M")) && !self.maps.contains(arg) {
            return Err(format!(
                "reads {arg}, which is not one of its own map files"
            ));
        }
        for file in map_references(arg) {
            if !self.maps.contains(file) {
                return Err(format!(
                    "argument {arg:?} reads {file}, which is not one of its own map files"
                ));
            }
        }
        if front {
            self.host(arg)
                .map_err(|host| format!("routes {host}, which is not a domain of its services"))?;
        }
        Ok(())
    }

    /// Whether `word`, if it is a host name, names one of its services' domains (or a name a
    /// wildcard domain of theirs covers). The error is the host name.
    fn host(&self, word: &str) -> Result<(), String> {
        let word = word.to_ascii_lowercase();
        let Some(host) = host_name(&word) else {
            return Ok(());
        };
        let suffix = word.starts_with('.') || word.starts_with("*.");
        let covered = self.domains.contains(word.as_str())
            || self.domains.contains(host)
            || (suffix && self.domains.contains(format!("*.{host}").as_str()))
            || self.domains.iter().any(|d| {
                d.strip_prefix('*')
                    .is_some_and(|parent| host.ends_with(parent))
            });
        if covered {
            Ok(())
        } else {
            Err(host.to_string())
        }
    }

    /// Its map files: named like its sections, keys only of its domains.
    fn maps(&self, fragment: &Fragment) -> Result<(), String> {
        for map in &fragment.maps {
            let stem = map.name.strip_suffix(".map").unwrap_or(&map.name);
            if !self.owns(stem) {
                return Err(format!(
                    "map file {}: a team guest's map files are named `{}.map` or `{}-....map`",
                    map.name, self.guest, self.guest
                ));
            }
            for entry in &map.entries {
                let host = entry.key.split('/').next().unwrap_or("");
                self.host(host).map_err(|host| {
                    format!(
                        "map file {}: key {} routes {host}, which is not a domain of its services",
                        map.name, entry.key
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// `args` are only `flags` and `valued` options (each followed by its value).
fn options(args: &[&str], flags: &[&str], valued: &[&str], what: &str) -> Result<(), String> {
    let mut args = args.iter();
    while let Some(option) = args.next() {
        if valued.contains(option) {
            args.next();
        } else if !flags.contains(option) {
            return Err(format!(
                "{what} option `{option}` is not on the team allow list"
            ));
        }
    }
    Ok(())
}

/// The action (first of `args`) is in `allowed` or sets a variable, and reads no file.
fn action(args: &[&str], allowed: &[&str]) -> Result<(), String> {
    let action = args.first().copied().unwrap_or("");
    let variable = ["set-var(", "unset-var(", "set-var-fmt("]
        .iter()
        .any(|p| action.starts_with(p));
    if !variable && !allowed.contains(&action) {
        return Err(format!("action `{action}` is not on the team allow list"));
    }
    match args.iter().find(|a| FILE_WORDS.contains(a)) {
        Some(word) => Err(format!("`{action} ... {word}` reads a file")),
        None => Ok(()),
    }
}

/// The IP address of a `server` address: `10.0.0.1:80`, `[fd00::1]:80`, `ipv6@fd00::1`.
fn server_ip(address: &str) -> Option<IpAddr> {
    let address = address
        .strip_prefix("ipv4@")
        .or_else(|| address.strip_prefix("ipv6@"))
        .unwrap_or(address);
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    address
        .parse()
        .ok()
        .or_else(|| address.rsplit_once(':')?.0.parse().ok())
}

/// The files `map(...)`, `map_str(...)` and the other map converters in `arg` read.
fn map_references(arg: &str) -> Vec<&str> {
    let mut files = Vec::new();
    for (at, _) in arg.match_indices("map") {
        let before = arg[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &arg[at + 3..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if let Some(params) = rest[name_end..].strip_prefix('(') {
            let end = params.find([',', ')']).unwrap_or(params.len());
            files.push(&params[..end]);
        }
    }
    files
}

/// The last converter of sample expression `expression` (`req.hdr(host),lower,map_str(f)` ->
/// `map_str(f)`), commas inside parentheses kept.
fn last_converter(expression: &str) -> Option<&str> {
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in expression.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => start = i + 1,
            _ => {}
        }
    }
    Some(&expression[start..]).filter(|last| !last.is_empty())
}

/// `map_str(FILE[,DEFAULT])` (or another map converter) as (FILE, DEFAULT).
fn map_lookup(converter: &str) -> Option<(&str, Option<&str>)> {
    let name_end = converter.find('(')?;
    let name = &converter[..name_end];
    if name != "map" && !name.starts_with("map_") {
        return None;
    }
    let params = converter[name_end + 1..].strip_suffix(')')?;
    Some(match params.split_once(',') {
        Some((file, default)) => (file, Some(default)),
        None => (params, None),
    })
}

/// `word` as a host name, when it is one: two or more DNS labels ending in a letters-only top
/// level, after a leading `.` or `*.`. Durations (`1.5s`), paths and expressions are not.
fn host_name(word: &str) -> Option<&str> {
    let host = word
        .strip_prefix("*.")
        .or_else(|| word.strip_prefix('.'))
        .unwrap_or(word);
    let labels: Vec<&str> = host.split('.').collect();
    let label = |l: &&str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let top = labels.last()?;
    (labels.len() >= 2
        && labels.iter().all(label)
        && top.len() >= 2
        && top.bytes().all(|b| b.is_ascii_alphabetic()))
    .then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Endpoint, MapEntry, MapFile};

    fn directive(keyword: &str, args: &[&str]) -> Directive {
        Directive::new(keyword, args)
    }

    fn section(kind: SectionKind, name: &str, directives: &[(&str, &[&str])]) -> Section {
        Section {
            kind,
            name: (!name.is_empty()).then(|| name.into()),
            directives: directives.iter().map(|(k, a)| directive(k, a)).collect(),
        }
    }

    /// Service a/web on web.a.example.com at 10.0.0.5, and team-a's routing of it on :8081.
    fn team_a() -> (Scope, Vec<Arc<Service>>, Fragment) {
        let scope = crate::scope::GuestsFile::parse(
            "guests:\n  team-a:\n    trust: team\n    namespaces: [a]\n    listen-ports: [8081]\n",
        )
        .unwrap()
        .guests["team-a"]
            .clone();
        let service = Service {
            namespace: "a".into(),
            name: "web".into(),
            domains: vec!["web.a.example.com".into()],
            proto: "http".into(),
            ports: Vec::new(),
            port: None,
            listen_port: None,
            endpoints: vec![Endpoint {
                address: "10.0.0.5".into(),
                port: Some(8080),
                ports: Vec::new(),
                ready: true,
                serving: true,
                terminating: false,
                node: None,
                zone: None,
                target_pod: None,
            }],
            annotations: Vec::new(),
            labels: Vec::new(),
            creation_time: None,
        };
        let fragment = Fragment::new(
            [
                section(
                    SectionKind::Frontend,
                    "team-a",
                    &[
                        ("bind", &[":8081", "name", "team-a"]),
                        ("mode", &["http"]),
                        ("option", &["httplog"]),
                        ("acl", &["web", "hdr(host)", "-i", "web.a.example.com"]),
                        (
                            "acl",
                            &["mapped", "base,map_beg(maps/team-a.map)", "-m", "found"],
                        ),
                        ("http-request", &["set-header", "X-Team", "a"]),
                        ("use_backend", &["team-a_web", "if", "web"]),
                        (
                            "http-request",
                            &["set-var(txn.be)", "base,map_beg(maps/team-a.map)"],
                        ),
                        ("use_backend", &["%[var(txn.be)]"]),
                    ],
                ),
                section(
                    SectionKind::Backend,
                    "team-a_web",
                    &[
                        ("balance", &["roundrobin"]),
                        ("server", &["s1", "10.0.0.5:8080", "check", "inter", "2s"]),
                    ],
                ),
            ],
            [MapFile {
                name: "team-a.map".into(),
                entries: vec![MapEntry {
                    key: "web.a.example.com/api".into(),
                    value: "team-a_web".into(),
                }],
            }],
        );
        (scope, vec![Arc::new(service)], fragment)
    }

    #[test]
    fn a_team_guest_that_keeps_to_its_scope_passes() {
        let (scope, services, fragment) = team_a();
        assert_eq!(
            check("team-a", &scope, (&services, true), &fragment, "maps"),
            Ok(())
        );
    }

    #[test]
    fn a_team_guest_given_no_endpoints_places_no_server() {
        let (scope, services, fragment) = team_a();
        let refusal = check("team-a", &scope, (&services, false), &fragment, "maps").unwrap_err();
        assert!(
            refusal
                .to_string()
                .contains("is not an endpoint of its services"),
            "{refusal}"
        );
    }

    #[test]
    fn every_forbidden_thing_is_refused_naming_the_rule() {
        let frontend =
            |f: &mut Fragment, d: Directive| Arc::make_mut(&mut f.sections[0]).directives.push(d);
        let backend =
            |f: &mut Fragment, d: Directive| Arc::make_mut(&mut f.sections[1]).directives.push(d);
        let add = |f: &mut Fragment, s: Section| f.sections.push(Arc::new(s));
        type Change = Box<dyn Fn(&mut Fragment)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(move |f| {
                    add(
                        f,
                        section(SectionKind::Global, "", &[("master-worker", &[])]),
                    )
                }),
                "only backend, frontend and listen sections, not global",
            ),
            (
                Box::new(move |f| add(f, section(SectionKind::Defaults, "", &[]))),
                "not defaults",
            ),
            (
                Box::new(move |f| {
                    add(
                        f,
                        section(
                            SectionKind::Program,
                            "team-a-x",
                            &[("command", &["/bin/sh"])],
                        ),
                    )
                }),
                "not program",
            ),
            (
                Box::new(move |f| add(f, section(SectionKind::Peers, "team-a-p", &[]))),
                "not peers",
            ),
            (
                Box::new(move |f| add(f, section(SectionKind::Ring, "team-a-r", &[]))),
                "not ring",
            ),
            (
                Box::new(move |f| add(f, section(SectionKind::Mailers, "team-a-m", &[]))),
                "not mailers",
            ),
            (
                Box::new(move |f| add(f, section(SectionKind::Userlist, "team-a-u", &[]))),
                "not userlist",
            ),
            (
                Box::new(move |f| add(f, section(SectionKind::Backend, "http", &[]))),
                "section names start with its name",
            ),
            (
                Box::new(move |f| backend(f, directive(".if", &["0"]))),
                "keywords starting with `.`",
            ),
            (
                Box::new(move |f| backend(f, directive("lua-load", &["/tmp/x.lua"]))),
                "`lua-load` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("external-check", &["command", "/bin/id"]))),
                "`external-check` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("option", &["external-check"]))),
                "`option external-check` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("setenv", &["X", "1"]))),
                "`setenv` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("stats", &["socket", "/tmp/s"]))),
                "`stats` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("chroot", &["/nowhere"]))),
                "`chroot` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("log", &["10.0.0.9:514", "local0"]))),
                "`log` is not on the team allow list",
            ),
            (
                Box::new(move |f| backend(f, directive("filter", &["spoe", "config", "/etc/x"]))),
                "`filter` is not on the team allow list",
            ),
            (
                Box::new(move |f| frontend(f, directive("http-request", &["lua.evil"]))),
                "action `lua.evil` is not on the team allow list",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("http-request", &["set-map(maps/hosts.map)", "x", "y"]),
                    )
                }),
                "action `set-map(maps/hosts.map)`",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive(
                            "http-request",
                            &["return", "status", "200", "file", "/etc/shadow"],
                        ),
                    )
                }),
                "reads a file",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("http-request", &["set-header", "X", "%[env(SECRET)]"]),
                    )
                }),
                "Lua and the environment",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("http-request", &["set-var(txn.x)", "str(a),lua.x"]),
                    )
                }),
                "Lua and the environment",
            ),
            (
                Box::new(move |f| {
                    frontend(f, directive("acl", &["x", "path", "-f", "/etc/passwd"]))
                }),
                "reads /etc/passwd",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("acl", &["x", "base,map_str(maps/hosts.map)", "-m", "found"]),
                    )
                }),
                "reads maps/hosts.map",
            ),
            (
                Box::new(move |f| frontend(f, directive("bind", &[":80"]))),
                "binds :80, which is not on a port its scope grants",
            ),
            (
                Box::new(move |f| frontend(f, directive("bind", &["unix@/tmp/x.sock"]))),
                "not on a port its scope grants",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("bind", &["127.0.0.1:8081", "ssl", "crt", "/etc/x.pem"]),
                    )
                }),
                "bind option `ssl`",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("acl", &["b", "hdr(host)", "-i", "web.b.example.com"]),
                    )
                }),
                "routes web.b.example.com, which is not a domain of its services",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("acl", &["all", "hdr_end(host)", "-i", ".example.com"]),
                    )
                }),
                "routes example.com",
            ),
            (
                Box::new(move |f| frontend(f, directive("use_backend", &["http_b_web"]))),
                "routes only to its own backends",
            ),
            (
                Box::new(move |f| frontend(f, directive("use_backend", &["%[var(txn.other)]"]))),
                "routes only to its own backends",
            ),
            (
                Box::new(move |f| backend(f, directive("server", &["s2", "169.254.169.254:80"]))),
                "server address 169.254.169.254:80 is not an endpoint",
            ),
            (
                Box::new(move |f| {
                    backend(
                        f,
                        directive("server", &["s2", "10.0.0.5:80", "ca-file", "/etc/x"]),
                    )
                }),
                "server option `ca-file`",
            ),
            (
                Box::new(move |f| {
                    backend(
                        f,
                        directive("server-template", &["s", "3", "evil.example.com:80"]),
                    )
                }),
                "`server-template` is not on the team allow list",
            ),
            (
                Box::new(move |f| {
                    backend(f, directive("http-check", &["connect", "addr", "10.9.9.9"]))
                }),
                "`http-check connect` is not allowed",
            ),
            (
                Box::new(move |f| backend(f, directive("bind", &[":8081"]))),
                "`bind` is not on the team allow list for a backend section",
            ),
            (
                Box::new(move |f| {
                    f.maps.push(Arc::new(MapFile {
                        name: "hosts.map".into(),
                        entries: Vec::new(),
                    }))
                }),
                "map file hosts.map: a team guest's map files are named",
            ),
            (
                Box::new(move |f| {
                    Arc::make_mut(&mut f.maps[0]).entries[0].key = "web.b.example.com/".into()
                }),
                "key web.b.example.com/ routes web.b.example.com",
            ),
            (
                Box::new(move |f| {
                    Arc::make_mut(&mut f.maps[0]).entries[0].value = "http_b_web".into()
                }),
                "routes only to its own backends",
            ),
            (
                Box::new(move |f| {
                    frontend(
                        f,
                        directive("http-request", &["set-var(txn.be)", "str(http_b_web)"]),
                    )
                }),
                "routes only to its own backends",
            ),
        ];
        for (change, rule) in cases {
            let (scope, services, mut fragment) = team_a();
            change(&mut fragment);
            let refusal = check("team-a", &scope, (&services, true), &fragment, "maps")
                .expect_err(&format!("allowed, but should break: {rule}"));
            assert!(
                refusal.to_string().contains(rule),
                "{refusal} does not say {rule:?}"
            );
        }
    }

    #[test]
    fn platform_guests_may_do_anything_but_dot_keywords_and_ungranted_ports() {
        let (_, services, mut fragment) = team_a();
        fragment.sections.push(Arc::new(section(
            SectionKind::Global,
            "",
            &[("lua-load", &["/x.lua"])],
        )));
        let platform = Scope::default();
        assert_eq!(
            check("team-a", &platform, (&services, true), &fragment, "maps"),
            Ok(())
        );
        Arc::make_mut(&mut fragment.sections[1])
            .directives
            .push(directive(".notice", &["x"]));
        let refusal = check("team-a", &platform, (&services, true), &fragment, "maps").unwrap_err();
        assert!(
            refusal.to_string().contains("keywords starting with `.`"),
            "{refusal}"
        );
        let limited = Scope {
            listen_ports: Some(vec![crate::scope::PortRange(9000..=9000)]),
            ..Scope::default()
        };
        let (_, services, fragment) = team_a();
        let refusal = check("team-a", &limited, (&services, true), &fragment, "maps").unwrap_err();
        assert!(refusal.to_string().contains("binds :8081"), "{refusal}");
    }

    #[test]
    fn host_names_are_told_from_other_words() {
        assert_eq!(host_name("a.example.com"), Some("a.example.com"));
        assert_eq!(host_name(".example.com"), Some("example.com"));
        assert_eq!(host_name("*.example.com"), Some("example.com"));
        for word in [
            "1.5s",
            "maps/a.map",
            "req.hdr(host)",
            "10.0.0.1",
            "http",
            "-i",
            "%[x]",
        ] {
            assert_eq!(host_name(word), None, "{word}");
        }
    }

    #[test]
    fn map_references_are_found() {
        assert_eq!(
            map_references("%[req.hdr(host),lower,map_str(maps/a.map,x)]"),
            ["maps/a.map"]
        );
        assert_eq!(map_references("base,map_beg(maps/b.map)"), ["maps/b.map"]);
        assert_eq!(map_references("map(/etc/x)"), ["/etc/x"]);
        assert!(map_references("bitmap(x) maps/a.map").is_empty());
    }

    #[test]
    fn server_addresses_are_read() {
        assert_eq!(server_ip("10.0.0.1:80"), "10.0.0.1".parse().ok());
        assert_eq!(server_ip("[fd00::1]:80"), "fd00::1".parse().ok());
        assert_eq!(server_ip("ipv6@fd00::1"), "fd00::1".parse().ok());
        assert_eq!(server_ip("metadata.internal:80"), None);
    }
}
