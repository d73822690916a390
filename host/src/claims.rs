//! What only one part of the configuration may own, and who owns it. Pure functions, no I/O.
//!
//! Listening addresses: HAProxy binds with SO_REUSEPORT, so two sections binding one port both
//! start, and the kernel splits the connections between them; a section binding a specific
//! address takes the connections to that address from one binding the wildcard. So the first
//! claim of an address:port wins (static files first, then guests in slot order, sections in
//! output order) and a later section binding any address it overlaps is dropped whole, with an
//! error naming both. No configuration with two listeners on one port is ever assembled.
//!
//! Names: a section name (frontends and backends each have their own names; a `listen` takes
//! both) and a map file name have one owner too, claimed in the same order; a later section or
//! map file with a taken name is dropped, with an error, so one guest's clash never fails the
//! whole configuration.

use crate::bindings::{MapFile, Section, SectionKind};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// One address a `bind` line names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listener {
    /// An IP listener: `host` is `None` for every address (`:80`, `*:80`, `0.0.0.0:80`, `:::80`,
    /// or a host name, which HAProxy resolves at start and is taken to mean any address).
    Inet {
        udp: bool,
        host: Option<IpAddr>,
        ports: RangeInclusive<u16>,
    },
    /// A UNIX socket, an inherited file descriptor, or anything else: equal only to itself.
    Other(String),
}

impl Listener {
    /// `[PREFIX@]HOST:PORT[-PORT]` as HAProxy reads a bind address.
    fn parse(address: &str) -> Listener {
        let other = || Listener::Other(address.to_string());
        let (udp, rest) = match address.split_once('@') {
            None => (false, address),
            Some(("ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6", rest)) => (false, rest),
            Some(("udp" | "udp4" | "udp6" | "quic4" | "quic6", rest)) => (true, rest),
            Some(_) => return other(),
        };
        let Some((host, ports)) = rest.rsplit_once(':') else {
            return other();
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
        let ports = match ports.split_once('-') {
            Some((low, high)) => port(low).zip(port(high)).map(|(l, h)| l..=h),
            None => port(ports).map(|p| p..=p),
        };
        let Some(ports) = ports else {
            return other();
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified());
        Listener::Inet { udp, host, ports }
    }

    fn overlaps(&self, other: &Listener) -> bool {
        match (self, other) {
            (
                Listener::Inet { udp, host, ports },
                Listener::Inet {
                    udp: other_udp,
                    host: other_host,
                    ports: other_ports,
                },
            ) => {
                udp == other_udp
                    && ports.start() <= other_ports.end()
                    && other_ports.start() <= ports.end()
                    && (host.is_none() || other_host.is_none() || host == other_host)
            }
            (a, b) => a == b,
        }
    }
}

/// The ports of a `bind` address (`:8080`, `127.0.0.1:8000-8009`); `None` for anything that is
/// not an IP address and port (a UNIX socket, an inherited file descriptor).
pub fn bind_ports(address: &str) -> Option<RangeInclusive<u16>> {
    match Listener::parse(address) {
        Listener::Inet { ports, .. } => Some(ports),
        Listener::Other(_) => None,
    }
}

/// The listening addresses and names claimed so far, each with its owner.
#[derive(Debug, Default)]
pub struct Claims {
    claims: Vec<(String, Listener, String)>,
    /// Name space -> name -> owner.
    names: BTreeMap<&'static str, foldhash::HashMap<String, Arc<str>>>,
    /// Map file name -> owner.
    maps: BTreeMap<String, String>,
}

/// The name spaces a section's name is in: a `listen` section is a frontend and a backend.
fn name_spaces(kind: SectionKind) -> impl Iterator<Item = &'static str> + Clone {
    match kind {
        SectionKind::Listen => [Some("frontend"), Some("backend")],
        SectionKind::Global => [None, None],
        kind => [Some(kind.keyword()), None],
    }
    .into_iter()
    .flatten()
}

impl Claims {
    /// Claim the name of a section of `kind` for `owner`: the error names who holds it.
    pub fn claim_name(
        &mut self,
        owner: &Arc<str>,
        kind: SectionKind,
        name: &str,
    ) -> Result<(), String> {
        let spaces = name_spaces(kind);
        let holder = (spaces.clone()).find_map(|space| self.names.get(space)?.get(name));
        if let Some(holder) = holder {
            return Err(format!("is named {name}, like {holder}"));
        }
        for space in spaces {
            let names = self.names.entry(space).or_default();
            names.insert(name.to_string(), owner.clone());
        }
        Ok(())
    }

    /// Claim the map files `maps` (one part's) for `part`; drop each one another part already
    /// writes. The errors say which file was dropped and why.
    pub fn claim_maps(&mut self, part: &str, maps: &mut Vec<Arc<MapFile>>) -> Vec<String> {
        let mut errors = Vec::new();
        maps.retain(|map| match self.maps.get(&map.name) {
            Some(holder) if holder != part => {
                errors.push(format!(
                    "{part}: map file {} left out: {holder} writes a map file of that name",
                    map.name
                ));
                false
            }
            _ => {
                self.maps.insert(map.name.clone(), part.to_string());
                true
            }
        });
        errors
    }

    /// Claim every address of `binds` (the first argument of each `bind` line) for `owner`,
    /// all or none: the error names the address and who holds it.
    pub fn claim<'a>(
        &mut self,
        owner: &str,
        binds: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let mut wanted = Vec::new();
        for address in binds.into_iter().flat_map(|b| b.split(',')) {
            let listener = Listener::parse(address);
            let held = self
                .claims
                .iter()
                .chain(&wanted)
                .find(|(_, claimed, _)| claimed.overlaps(&listener));
            if let Some((theirs, _, holder)) = held {
                return Err(if theirs == address {
                    format!("binds {address}, which {holder} already binds")
                } else {
                    format!("binds {address}, which overlaps {theirs} that {holder} already binds")
                });
            }
            wanted.push((address.to_string(), listener, owner.to_string()));
        }
        self.claims.extend(wanted);
        Ok(())
    }

    /// Claim the names and binds of `sections` (one part's, in order) for `part`; drop each
    /// section whose claim fails. The errors say which section was dropped and why.
    pub fn claim_sections(&mut self, part: &str, sections: &mut Vec<Arc<Section>>) -> Vec<String> {
        let mut errors = Vec::new();
        sections.retain(|section| {
            let title = section.title();
            let owner: Arc<str> = format!("{part}, section `{title}`").into();
            if let Some(name) = &section.name
                && let Err(error) = self.claim_name(&owner, section.kind, name)
            {
                errors.push(format!(
                    "{part}: section `{title}` left out: it {error}; section names are unique \
                     across guests"
                ));
                return false;
            }
            let binds = section
                .directives
                .iter()
                .filter(|d| d.keyword() == "bind")
                .filter_map(|d| d.arg(0));
            match self.claim(&owner, binds) {
                Ok(()) => true,
                Err(error) => {
                    errors.push(format!(
                        "{part}: section `{title}` left out: it {error}; only one section may \
                         listen on an address"
                    ));
                    false
                }
            }
        });
        errors
    }
}

/// The (kind, name) of each named section of a static configuration file.
pub fn static_sections(text: &str) -> impl Iterator<Item = (SectionKind, &str)> {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        let kind = match words.next()? {
            "frontend" => SectionKind::Frontend,
            "backend" => SectionKind::Backend,
            "listen" => SectionKind::Listen,
            _ => return None,
        };
        Some((kind, words.next()?))
    })
}

/// The first argument of each `bind` line of a static configuration file.
pub fn static_binds(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("bind"))
            .then(|| words.next())
            .flatten()
            .map(|word| word.trim_matches(['\'', '"']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Directive, SectionKind};

    fn listen(name: &str, binds: &[&str]) -> Arc<Section> {
        Arc::new(Section {
            kind: SectionKind::Listen,
            name: Some(name.into()),
            directives: binds.iter().map(|b| Directive::new("bind", [b])).collect(),
        })
    }

    fn conflict(first: &str, second: &str) -> bool {
        let mut listeners = Claims::default();
        listeners.claim("a", [first]).unwrap();
        listeners.claim("b", [second]).is_err()
    }

    #[test]
    fn the_same_port_on_any_overlapping_address_is_a_conflict() {
        for (first, second) in [
            (":80", ":80"),
            (":80", "*:80"),
            (":80", "0.0.0.0:80"),
            (":80", ":::80"),
            (":80", "[::]:80"),
            (":80", "127.0.0.1:80"),
            ("127.0.0.1:80", ":80"),
            ("127.0.0.1:80", "ipv4@127.0.0.1:80"),
            (":8000-8010", ":8005"),
            (":80", "localhost:80"),
            ("unix@/run/a.sock", "unix@/run/a.sock"),
        ] {
            assert!(conflict(first, second), "{first} then {second} allowed");
        }
        for (first, second) in [
            (":80", ":81"),
            ("127.0.0.1:80", "127.0.0.2:80"),
            (":443", "quic4@:443"),
            (":8000-8010", ":8011"),
            ("unix@/run/a.sock", "unix@/run/b.sock"),
        ] {
            assert!(!conflict(first, second), "{first} then {second} refused");
        }
    }

    #[test]
    fn a_later_section_on_a_taken_port_is_dropped_and_both_are_named() {
        let mut listeners = Claims::default();
        let mut http = vec![listen("http", &[":80"])];
        assert!(
            listeners
                .claim_sections("guest 20-http", &mut http)
                .is_empty()
        );
        let mut redis = vec![
            listen("redis_evil", &["127.0.0.1:6379", ":80"]),
            listen("redis_good", &[":6380"]),
        ];
        let errors = listeners.claim_sections("guest 40-redis", &mut redis);
        assert_eq!(redis.len(), 1);
        assert_eq!(redis[0].name.as_deref(), Some("redis_good"));
        assert_eq!(
            errors,
            [
                "guest 40-redis: section `listen redis_evil` left out: it binds :80, which guest \
              20-http, section `listen http` already binds; only one section may listen on an \
              address"
            ]
        );
        // The dropped section claimed nothing: its other address is still free.
        assert!(listeners.claim("c", ["127.0.0.1:6379"]).is_ok());
    }

    #[test]
    fn one_section_cannot_bind_one_address_twice_and_lists_are_split() {
        let mut listeners = Claims::default();
        assert!(listeners.claim("a", [":80,:80"]).is_err());
        assert!(listeners.claim("a", [":81,:82"]).is_ok());
        assert!(listeners.claim("b", [":82"]).is_err());
    }

    #[test]
    fn static_files_bind_lines_are_found() {
        let text = "frontend stats\n    bind 127.0.0.1:9000 ssl crt x\n  # bind :1\nlisten x\n    bind ':9001'\n";
        assert_eq!(
            static_binds(text).collect::<Vec<_>>(),
            ["127.0.0.1:9000", ":9001"]
        );
    }
}
