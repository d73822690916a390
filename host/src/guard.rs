//! The blast-radius guard of `run`: a render that would take away more than a share of the
//! installed backends at once, removing them or every server they have, is held back until it
//! has persisted for a while or the operator confirms it. An emptied list of Services or
//! EndpointSlices after an RBAC or API mistake looks exactly like that; serving the last
//! configuration a little longer is the cheaper mistake.
//!
//! Servers are not counted one by one: one service scaling from 10 replicas to 1 removes 90% of
//! a small cluster's servers and is routine, but leaves its backend serving.

use crate::bindings::Section;
use crate::fragment::Fragment;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Below this many installed backends with servers nothing is held: in a cluster of one or two services,
/// deleting one is not an accident to guard against.
pub const FLOOR: usize = 3;

/// How the guard is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest share, in percent, of installed backends one render may remove or leave without
    /// a server; 100 turns the guard off.
    pub max_removal: u8,
    /// How long a held render must persist before it is applied anyway.
    pub hold_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_removal: 50,
            hold_for: Duration::from_secs(300),
        }
    }
}

/// What the guard decided about one render.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Applied after all: held long enough, or confirmed. Says what it removes.
    Released(String),
    /// Held back: what it would remove, and since when.
    Held(String, Instant),
}

/// The guard's memory: the render held back, if one is.
#[derive(Debug, Default)]
pub struct Guard {
    held_since: Option<Instant>,
}

impl Guard {
    /// Whether to apply `new` over `installed`, at `now`; `confirmed` by the operator.
    pub fn judge(
        &mut self,
        limits: Limits,
        installed: &[Fragment],
        new: &[Fragment],
        now: Instant,
        confirmed: bool,
    ) -> Verdict {
        let Some(removal) = excessive_removal(limits.max_removal, installed, new) else {
            self.held_since = None;
            return Verdict::Apply;
        };
        let since = *self.held_since.get_or_insert(now);
        if confirmed || now.duration_since(since) >= limits.hold_for {
            self.held_since = None;
            return Verdict::Released(removal);
        }
        Verdict::Held(removal, since)
    }

    pub fn holding(&self) -> bool {
        self.held_since.is_some()
    }
}

/// What `new` takes away of `installed` when it is more than `max_removal` percent of the
/// backends that have servers (removing them, or all their servers), e.g.
/// `9 of 10 backends with servers (90%)`.
pub fn excessive_removal(
    max_removal: u8,
    installed: &[Fragment],
    new: &[Fragment],
) -> Option<String> {
    let (lost, total) = match aligned(installed, new) {
        // The same sections in the same places (servers changed, the usual case): only those
        // that are not the very ones installed can have lost their servers.
        Some(pairs) => {
            let serves = |s: &Section| s.directives.iter().any(|d| d.keyword() == "server");
            let backends = pairs.filter(|(old, _)| old.kind.has_servers());
            let (mut lost, mut total) = (0, 0);
            for (old, new) in backends.filter(|(old, _)| serves(old)) {
                total += 1;
                lost += usize::from(!Arc::ptr_eq(old, new) && !serves(new));
            }
            (lost, total)
        }
        None => {
            let serving: Vec<&str> = backends(installed)
                .into_iter()
                .filter(|(_, servers)| *servers > 0)
                .map(|(name, _)| name)
                .collect();
            let after = backends(new);
            let lost = serving
                .iter()
                .filter(|name| after.get(**name).is_none_or(|servers| *servers == 0))
                .count();
            (lost, serving.len())
        }
    };
    (total >= FLOOR && lost * 100 > total * usize::from(max_removal)).then(|| {
        format!(
            "{lost} of {total} backends with servers ({}%)",
            lost * 100 / total
        )
    })
}

/// The sections of `a` and `b` side by side, when both have the same sections (kind and name)
/// in the same places.
fn aligned<'a>(
    a: &'a [Fragment],
    b: &'a [Fragment],
) -> Option<impl Iterator<Item = (&'a Arc<Section>, &'a Arc<Section>)>> {
    let same = a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.sections.len() == b.sections.len()
                && (a.sections.iter().zip(&b.sections)).all(|(x, y)| x.same_title(y))
        });
    same.then(|| {
        let pairs = a.iter().zip(b);
        pairs.flat_map(|(a, b)| a.sections.iter().zip(&b.sections))
    })
}

/// The backends of `fragments` (and `listen` sections), with how many servers each has.
fn backends(fragments: &[Fragment]) -> BTreeMap<&str, usize> {
    fragments
        .iter()
        .flat_map(|f| &f.sections)
        .filter(|s| s.kind.has_servers())
        .filter_map(|s| {
            let servers = s
                .directives
                .iter()
                .filter(|d| d.keyword() == "server")
                .count();
            Some((s.name.as_deref()?, servers))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Directive, Section, SectionKind};

    /// One backend per service, `servers` servers in all, spread over `backends` backends.
    fn cluster(backends: usize, servers: usize) -> Vec<Fragment> {
        let sections: Vec<Section> = (0..backends)
            .map(|b| Section {
                kind: SectionKind::Backend,
                name: Some(format!("be{b}")),
                directives: (0..servers)
                    .filter(|s| s % backends == b)
                    .map(|s| Directive::new("server", [format!("s{s}"), "10.0.0.1:80".into()]))
                    .collect(),
            })
            .collect();
        vec![Fragment::new(sections, [])]
    }

    #[test]
    fn removing_or_emptying_most_backends_is_excessive_and_scaling_down_is_not() {
        let ten = cluster(10, 10);
        let message = "9 of 10 backends with servers (90%)";
        assert_eq!(
            excessive_removal(50, &ten, &cluster(10, 1)),
            Some(message.into())
        );
        assert_eq!(
            excessive_removal(50, &ten, &cluster(1, 1)),
            Some(message.into())
        );
        assert_eq!(
            excessive_removal(50, &ten, &cluster(10, 5)),
            None,
            "half is allowed"
        );
        assert_eq!(excessive_removal(100, &ten, &[]), None, "100% turns it off");
        assert_eq!(
            excessive_removal(50, &cluster(2, 2), &[]),
            None,
            "below the floor"
        );
        assert_eq!(
            excessive_removal(50, &cluster(1, 10), &cluster(1, 1)),
            None,
            "one service scaling down"
        );
        assert_eq!(
            excessive_removal(50, &cluster(10, 0), &[]),
            None,
            "backends without servers do not count"
        );
    }

    #[test]
    fn a_held_render_applies_once_it_persists_or_is_confirmed_and_recovery_clears_it() {
        let limits = Limits {
            max_removal: 50,
            hold_for: Duration::from_secs(60),
        };
        let (ten, one) = (cluster(10, 10), cluster(1, 1));
        let start = Instant::now();
        let mut guard = Guard::default();
        let held = guard.judge(limits, &ten, &one, start, false);
        assert!(matches!(held, Verdict::Held(_, since) if since == start));
        let later = start + Duration::from_secs(30);
        assert!(
            matches!(guard.judge(limits, &ten, &one, later, false), Verdict::Held(_, s) if s == start)
        );
        // The cluster came back: nothing is held, and the clock starts again next time.
        assert_eq!(
            guard.judge(limits, &ten, &ten, later, false),
            Verdict::Apply
        );
        assert!(!guard.holding());
        let again = start + Duration::from_secs(61);
        assert!(matches!(
            guard.judge(limits, &ten, &one, again, false),
            Verdict::Held(..)
        ));
        let expired = again + Duration::from_secs(60);
        assert!(matches!(
            guard.judge(limits, &ten, &one, expired, false),
            Verdict::Released(_)
        ));
        assert!(matches!(
            guard.judge(limits, &ten, &one, expired, false),
            Verdict::Held(..)
        ));
        assert!(matches!(
            guard.judge(limits, &ten, &one, expired, true),
            Verdict::Released(_)
        ));
    }
}
