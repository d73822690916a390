//! The parts of a configuration: slots named like files (`20-http`), ordered by a numeric-aware
//! sort of those names. The bundled guests fill default slots; a `*.wasm` guest or a static
//! `*.conf` file in the guest directory with the same name replaces one (an empty `.conf`
//! disables it), and any other name adds a part.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// The bundled guests and their slots.
pub const BUNDLED: &[(&str, &[u8])] = &[
    ("00-base", include_bytes!("../../guests/base.wasm")),
    ("20-http", include_bytes!("../../guests/http.wasm")),
    ("30-https", include_bytes!("../../guests/https.wasm")),
    ("40-redis", include_bytes!("../../guests/redis.wasm")),
];

/// One part of the configuration, before it runs.
#[derive(Debug, Clone)]
pub struct Part {
    /// The file name without extension, e.g. `20-http`.
    pub slot: String,
    /// Where it comes from, for messages and the header comment: `bundled` or a path.
    pub origin: String,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub enum Source {
    Guest(Cow<'static, [u8]>),
    Static(String),
}

impl Part {
    /// The guest's name: its slot without the leading order number (`20-http` -> `http`).
    pub fn name(&self) -> &str {
        guest_name(&self.slot)
    }
}

/// `20-http` -> `http`; a slot without an order number is its own name.
pub fn guest_name(slot: &str) -> &str {
    let rest = slot.trim_start_matches(|c: char| c.is_ascii_digit());
    match rest.strip_prefix(['-', '_']) {
        Some(name) if rest.len() < slot.len() && !name.is_empty() => name,
        _ => slot,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    #[error("cannot read guest directory {path}: {error}")]
    ReadDir { path: String, error: std::io::Error },
    #[error("guest directory has both {first} and {second} for slot {slot}: keep one")]
    DuplicateSlot {
        slot: String,
        first: String,
        second: String,
    },
}

/// The parts in order: the bundled ones, replaced or extended by the files of `dir` and by the
/// `remote` parts (guests from registries). Two of those in one slot are an error.
pub fn parts(dir: Option<&Path>, remote: Vec<Part>) -> Result<Vec<Part>, PartsError> {
    let mut parts: Vec<Part> = BUNDLED
        .iter()
        .map(|(slot, wasm)| Part {
            slot: slot.to_string(),
            origin: "bundled".into(),
            source: Source::Guest(Cow::Borrowed(*wasm)),
        })
        .collect();
    // (slot, origin) of the parts added so far.
    let mut added: Vec<(String, String)> = Vec::new();
    for part in dir
        .map(files)
        .transpose()?
        .unwrap_or_default()
        .into_iter()
        .chain(remote)
    {
        if let Some((_, first)) = added.iter().find(|(slot, _)| *slot == part.slot) {
            return Err(PartsError::DuplicateSlot {
                slot: part.slot,
                first: first.clone(),
                second: part.origin,
            });
        }
        added.push((part.slot.clone(), part.origin.clone()));
        match parts.iter_mut().find(|p| p.slot == part.slot) {
            Some(bundled) => *bundled = part,
            None => parts.push(part),
        }
    }
    parts.sort_by(|a, b| numeric_cmp(&a.slot, &b.slot));
    Ok(parts)
}

/// The `*.wasm` and `*.conf` files of `dir` as parts, by file name.
fn files(dir: &Path) -> Result<Vec<Part>, PartsError> {
    let read_error = |error| PartsError::ReadDir {
        path: dir.display().to_string(),
        error,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    paths.sort();
    let mut parts = Vec::new();
    for path in paths {
        let (Some(stem), Some(ext)) = (path.file_stem().and_then(|s| s.to_str()), path.extension())
        else {
            continue;
        };
        let source = match ext.to_str() {
            Some("wasm") => Source::Guest(Cow::Owned(std::fs::read(&path).map_err(read_error)?)),
            Some("conf") => Source::Static(std::fs::read_to_string(&path).map_err(read_error)?),
            _ => continue,
        };
        parts.push(Part {
            slot: stem.to_string(),
            origin: path.display().to_string(),
            source,
        });
    }
    Ok(parts)
}

/// Compare names so that runs of digits compare as numbers: `2-x` < `10-x`.
pub fn numeric_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let ((da, ra, rest_a), (db, rb, rest_b)) = (digit_run(a), digit_run(b));
        let order = match (ra.is_empty(), rb.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ if da && db => {
                let (ta, tb) = (ra.trim_start_matches('0'), rb.trim_start_matches('0'));
                ta.len()
                    .cmp(&tb.len())
                    .then(ta.cmp(tb))
                    .then(ra.len().cmp(&rb.len()))
            }
            _ => ra.cmp(rb),
        };
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (rest_a, rest_b);
    }
}

/// The leading run of `s` (all digits or no digits): (is digits, run, rest).
fn digit_run(s: &str) -> (bool, &str, &str) {
    let digits = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    (digits, &s[..end], &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_aware_order() {
        let mut names = vec!["10-x", "2-x", "b", "02-y", "a", "1-z", "20-http", "100"];
        names.sort_by(|a, b| numeric_cmp(a, b));
        assert_eq!(
            names,
            ["1-z", "2-x", "02-y", "10-x", "20-http", "100", "a", "b"]
        );
    }

    #[test]
    fn guest_names_drop_the_order_number() {
        assert_eq!(guest_name("20-http"), "http");
        assert_eq!(guest_name("5_team-routing"), "team-routing");
        assert_eq!(guest_name("custom"), "custom");
        assert_eq!(guest_name("42"), "42");
    }
}
