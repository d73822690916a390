//! What each guest may see and do: its scope, from the guests configuration file
//! (`--guests-config`, YAML, meant to live in a ConfigMap).
//!
//! ```yaml
//! guests:
//!   team-a:                        # the guest's name: its slot without the order number
//!     trust: team                  # `platform` (the default) or `team`
//!     namespaces: [team-a, "team-a-*"]
//!     namespace-labels: {team: a}  # and/or: namespaces carrying these labels
//!     protos: [team-a]             # default: every proto
//!     listen-ports: ["8081", "8100-8109"]
//!     settings:
//!       bind: ":8081"
//! ```
//!
//! A guest receives only the services its scope admits. A `team` guest's output is held to the
//! team policy ([`crate::policy`]); a `platform` guest's output only to the rules every guest
//! follows. A guest the file does not name is `platform`, sees every service and may bind any
//! port, as without the file.

use crate::bindings::Service;
use crate::model::NamespaceLabels;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

/// How far a guest is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// The operator's own guests (and the bundled ones): any section and directive.
    #[default]
    Platform,
    /// Another team's guest: backends, and frontends on granted ports, from an allow list.
    Team,
}

/// One guest's entry in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scope {
    #[serde(default)]
    pub trust: Trust,
    /// Namespaces whose services it receives: names, or globs with `*`. Every namespace when
    /// absent (a `team` guest must say this or `namespace-labels`).
    pub namespaces: Option<Vec<String>>,
    /// Labels a namespace must all carry for its services to be received (as a label selector's
    /// `matchLabels`), together with `namespaces` when both are given.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// Protos of the services it receives; every proto when absent.
    pub protos: Option<Vec<String>>,
    /// Ports its `bind` lines may use (`"8081"`, `"8100-8199"`). Any port when absent for a
    /// `platform` guest; none for a `team` guest.
    pub listen_ports: Option<Vec<PortRange>>,
    /// Its settings, as `--set GUEST.KEY=VALUE` gives them (`--set` wins).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// A port or a range of ports, written `"8080"` or `"8000-8099"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct PortRange(pub RangeInclusive<u16>);

impl TryFrom<serde_yaml::Value> for PortRange {
    type Error = String;

    fn try_from(value: serde_yaml::Value) -> Result<Self, String> {
        let text = match &value {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s.clone(),
            _ => return Err(format!("a port or range like \"8000-8099\", got {value:?}")),
        };
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let range = match text.split_once('-') {
            Some((low, high)) => port(low).zip(port(high)).filter(|(l, h)| l <= h),
            None => port(&text).map(|p| (p, p)),
        };
        range
            .map(|(low, high)| PortRange(low..=high))
            .ok_or_else(|| {
                format!("{text:?} is not a port (1-65535) or a range like \"8000-8099\"")
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("cannot read guests configuration {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("guests configuration {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The guests configuration file: each guest's scope, by guest name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestsFile {
    #[serde(default)]
    pub guests: BTreeMap<String, Scope>,
}

impl GuestsFile {
    /// Read and check `path`; an error names the line of the mistake.
    pub fn load(path: &Path) -> Result<GuestsFile, ScopeError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScopeError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text).map_err(|message| ScopeError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<GuestsFile, String> {
        let file: GuestsFile = match serde_yaml::from_str(text) {
            Ok(file) => file,
            // An empty file (or only comments) configures nothing.
            Err(_)
                if text
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim().starts_with('#')) =>
            {
                GuestsFile::default()
            }
            Err(error) => return Err(error.to_string()),
        };
        for (name, scope) in &file.guests {
            scope.check().map_err(|e| format!("guests.{name}: {e}"))?;
        }
        Ok(file)
    }
}

impl Scope {
    fn check(&self) -> Result<(), String> {
        let unscoped = self.namespaces.is_none() && self.namespace_labels.is_none();
        if self.trust == Trust::Team && unscoped {
            return Err(
                "a team guest needs `namespaces` or `namespace-labels`: which \
                        namespaces' services it receives"
                    .into(),
            );
        }
        for pattern in self.namespaces.iter().flatten() {
            let valid = !pattern.is_empty()
                && pattern
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-*".contains(&b));
            if !valid {
                return Err(format!(
                    "namespace {pattern:?} is not a namespace name or a glob of one (lower-case \
                     letters, digits, `-`, and `*` for any run of them)"
                ));
            }
        }
        for proto in self.protos.iter().flatten() {
            crate::model::check_proto(proto)?;
        }
        Ok(())
    }

    /// Whether the guest receives `service`; `namespaces` are the labels of each namespace
    /// known (looked up only when the scope selects by them). `declared` are the protos the
    /// guest says it serves, when it says: the scope can narrow them, never widen them.
    pub fn admits(
        &self,
        service: &Service,
        namespaces: &NamespaceLabels,
        declared: Option<&[String]>,
    ) -> bool {
        let named = self
            .namespaces
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| glob_matches(p, &service.namespace)));
        let labelled = self.namespace_labels.as_ref().is_none_or(|wanted| {
            let labels = namespaces.get(&service.namespace);
            labels.is_some_and(|labels| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
        });
        let proto = |protos: Option<&[String]>| protos.is_none_or(|p| p.contains(&service.proto));
        named && labelled && proto(self.protos.as_deref()) && proto(declared)
    }

    /// Whether the guest may bind `port`.
    pub fn may_bind(&self, port: &RangeInclusive<u16>) -> bool {
        match &self.listen_ports {
            None => self.trust == Trust::Platform,
            Some(granted) => granted
                .iter()
                .any(|g| g.0.start() <= port.start() && port.end() <= g.0.end()),
        }
    }
}

/// `pattern` with `*` matching any run of characters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("team-a", "team-a"));
        assert!(!glob_matches("team-a", "team-ab"));
        assert!(glob_matches("team-a-*", "team-a-dev"));
        assert!(!glob_matches("team-a-*", "team-b-dev"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*-prod", "shop-prod"));
        assert!(glob_matches("a*b*c", "a-x-b-y-c"));
        assert!(!glob_matches("a*b*c", "a-c"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn the_file_is_read_with_every_key() {
        let file = GuestsFile::parse(
            "guests:\n  team-a:\n    trust: team\n    namespaces: [team-a, \"team-a-*\"]\n    \
             protos: [web]\n    listen-ports: [8081, \"8100-8109\"]\n    settings:\n      \
             bind: \":8081\"\n",
        )
        .unwrap();
        let scope = &file.guests["team-a"];
        assert_eq!(scope.trust, Trust::Team);
        assert!(scope.may_bind(&(8081..=8081)));
        assert!(scope.may_bind(&(8105..=8109)));
        assert!(!scope.may_bind(&(8082..=8082)));
        assert!(!scope.may_bind(&(8100..=8110)));
        assert_eq!(scope.settings["bind"], ":8081");
        assert_eq!(
            GuestsFile::parse("# nothing yet\n").unwrap(),
            GuestsFile::default()
        );
    }

    #[test]
    fn mistakes_name_the_line_or_the_guest() {
        let error = GuestsFile::parse("guests:\n  team-a:\n    trust: team\n    namespace: [a]\n")
            .unwrap_err();
        assert!(error.contains("unknown field `namespace`"), "{error}");
        assert!(error.contains("line 4"), "{error}");
        let error = GuestsFile::parse("guests:\n  team-a:\n    trust: team\n").unwrap_err();
        assert!(
            error.starts_with("guests.team-a: a team guest needs `namespaces` or"),
            "{error}"
        );
        let error =
            GuestsFile::parse("guests:\n  x:\n    listen-ports: [\"90-80\"]\n").unwrap_err();
        assert!(error.contains("\"90-80\" is not a port"), "{error}");
        let error = GuestsFile::parse("guests:\n  x:\n    trust: root\n").unwrap_err();
        assert!(error.contains("unknown variant `root`"), "{error}");
    }
}
