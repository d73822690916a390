//! Guests' structured output -> configuration text.
//!
//! The parts of a configuration are slots named like files (`20-http`), ordered by a
//! numeric-aware sort of those names. The bundled guests fill default slots; a `*.wasm` guest or
//! a static `*.conf` file in the guest directory with the same name replaces one (an empty
//! `.conf` disables it), and any other name adds a part.
//!
//! The host writes the text and quotes every argument so HAProxy reads back exactly the string a
//! guest meant. Control characters are refused, so no value can start a new line or section.

use crate::bindings::{Fragment, SectionKind};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// Where map files and certificates go, relative to the configuration file's directory.
pub const MAPS_DIR: &str = "maps";
pub const CERTS_DIR: &str = "certs";

/// The bundled guests and their slots.
pub const BUNDLED: &[(&str, &[u8])] = &[
    ("00-base", include_bytes!("../guests/base.wasm")),
    ("20-http", include_bytes!("../guests/http.wasm")),
    ("30-https", include_bytes!("../guests/https.wasm")),
    ("40-redis", include_bytes!("../guests/redis.wasm")),
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
pub enum AssembleError {
    #[error("cannot read guest directory {path}: {source}")]
    ReadDir {
        path: String,
        source: std::io::Error,
    },
    #[error("guest directory has both {first} and {second} for slot {slot}: keep one")]
    DuplicateSlot {
        slot: String,
        first: String,
        second: String,
    },
    #[error("{part}: {message}")]
    Invalid { part: String, message: String },
}

/// The parts in order: the bundled ones, replaced or extended by the files of `dir` and by the
/// `remote` parts (guests from registries). Two of those in one slot are an error.
pub fn parts(dir: Option<&Path>, remote: Vec<Part>) -> Result<Vec<Part>, AssembleError> {
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
            return Err(AssembleError::DuplicateSlot {
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
fn files(dir: &Path) -> Result<Vec<Part>, AssembleError> {
    let read_error = |source| AssembleError::ReadDir {
        path: dir.display().to_string(),
        source,
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

/// What one part produced.
pub enum Output<'a> {
    Static(&'a str),
    Fragment(&'a Fragment),
}

/// A whole configuration: its text, its map files, and which part wrote each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub config: String,
    /// `(file name, contents)`, sorted by name, written into the maps directory.
    pub maps: Vec<(String, String)>,
    /// `(first line number, description)` of each part and section, in order.
    origins: Vec<(usize, String)>,
}

impl Assembled {
    /// Which part (and section) wrote line `line` (1-based), e.g. `guest http (bundled), backend x`.
    pub fn origin_of(&self, line: usize) -> Option<&str> {
        let index = self.origins.partition_point(|(first, _)| *first <= line);
        index.checked_sub(1).map(|i| self.origins[i].1.as_str())
    }
}

/// Write the configuration text of `outputs`, in order.
pub fn assemble(outputs: &[(&Part, Output)]) -> Result<Assembled, AssembleError> {
    let mut text = Text::default();
    text.push("# Written by wasmconfd. Changes made here are overwritten.\n");
    let mut maps: Vec<(String, String, String)> = Vec::new();
    let mut origins = Vec::new();
    for (part, output) in outputs {
        let kind = match output {
            Output::Static(_) => "static file",
            Output::Fragment(_) => "guest",
        };
        let label = format!("{kind} {} ({})", part.slot, part.origin);
        text.push(&format!("\n# --- {label} ---\n"));
        origins.push((text.lines + 1, label.clone()));
        match output {
            Output::Static(conf) => {
                text.push(conf);
                if !conf.is_empty() && !conf.ends_with('\n') {
                    text.push("\n");
                }
            }
            Output::Fragment(fragment) => {
                let invalid = |message: String| AssembleError::Invalid {
                    part: format!("guest {}", part.name()),
                    message,
                };
                for (i, section) in fragment.sections.iter().enumerate() {
                    if i > 0 {
                        text.push("\n");
                    }
                    let header =
                        section_header(section.kind, section.name.as_deref()).map_err(&invalid)?;
                    origins.push((text.lines + 1, format!("{label}, section `{header}`")));
                    text.push(&header);
                    text.push("\n");
                    for directive in &section.directives {
                        let line = directive_line(
                            &directive.keyword,
                            &directive.args,
                            directive.comment.as_deref(),
                        )
                        .map_err(|e| invalid(format!("section `{header}`: {e}")))?;
                        text.push("    ");
                        text.push(&line);
                        text.push("\n");
                    }
                }
                for map in &fragment.maps {
                    check_map_name(&map.name).map_err(&invalid)?;
                    if let Some((_, owner, _)) = maps.iter().find(|(name, _, _)| *name == map.name)
                    {
                        return Err(invalid(format!(
                            "map file {} is also written by guest {owner}",
                            map.name
                        )));
                    }
                    let mut contents = String::new();
                    for entry in &map.entries {
                        check_map_entry(&entry.key, &entry.value)
                            .map_err(|e| invalid(format!("map file {}: {e}", map.name)))?;
                        contents.push_str(&entry.key);
                        contents.push(' ');
                        contents.push_str(&entry.value);
                        contents.push('\n');
                    }
                    maps.push((map.name.clone(), part.name().to_string(), contents));
                }
            }
        }
    }
    maps.sort();
    Ok(Assembled {
        config: text.buf,
        maps: maps
            .into_iter()
            .map(|(name, _, contents)| (name, contents))
            .collect(),
        origins,
    })
}

/// Configuration text that knows how many lines it has.
#[derive(Default)]
struct Text {
    buf: String,
    lines: usize,
}

impl Text {
    fn push(&mut self, s: &str) {
        self.lines += s.bytes().filter(|&b| b == b'\n').count();
        self.buf.push_str(s);
    }
}

/// The keyword that starts a section of `kind`.
pub fn section_keyword(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Global => "global",
        SectionKind::Defaults => "defaults",
        SectionKind::Frontend => "frontend",
        SectionKind::Backend => "backend",
        SectionKind::Listen => "listen",
        SectionKind::Resolvers => "resolvers",
        SectionKind::Peers => "peers",
        SectionKind::Userlist => "userlist",
        SectionKind::HttpErrors => "http-errors",
        SectionKind::Ring => "ring",
        SectionKind::Cache => "cache",
        SectionKind::Mailers => "mailers",
        SectionKind::Program => "program",
    }
}

/// `backend NAME`, `global`, ...
fn section_header(kind: SectionKind, name: Option<&str>) -> Result<String, String> {
    let keyword = section_keyword(kind);
    match (kind, name) {
        (SectionKind::Global, Some(name)) => {
            Err(format!("a global section has no name, got {name:?}"))
        }
        (SectionKind::Global | SectionKind::Defaults, None) => Ok(keyword.to_string()),
        (_, None) => Err(format!("a {keyword} section needs a name")),
        (_, Some(name)) => {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if valid {
                Ok(format!("{keyword} {name}"))
            } else {
                Err(format!(
                    "{keyword} name {name:?} is not valid: HAProxy allows letters, digits, `-`, `_`, `.` and `:`"
                ))
            }
        }
    }
}

/// `keyword 'arg' ... # comment`, every argument quoted as needed.
pub fn directive_line(
    keyword: &str,
    args: &[String],
    comment: Option<&str>,
) -> Result<String, String> {
    let valid_keyword = !keyword.is_empty()
        && keyword.split(' ').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !valid_keyword {
        return Err(format!(
            "keyword {keyword:?} is not valid: use words of letters, digits, `-`, `_` and `.`, separated by single spaces"
        ));
    }
    let mut line = keyword.to_string();
    for (i, arg) in args.iter().enumerate() {
        let quoted = quote(arg).map_err(|e| format!("argument {} of `{keyword}` {e}", i + 1))?;
        line.push(' ');
        line.push_str(&quoted);
    }
    if let Some(comment) = comment {
        refuse_control(comment).map_err(|e| format!("comment of `{keyword}` {e}"))?;
        line.push_str("  # ");
        line.push_str(comment);
    }
    Ok(line)
}

/// `arg` as HAProxy must read it to get `arg` back: as is when it holds only characters HAProxy
/// never interprets, else in single quotes (where nothing is interpreted), with each `'` written
/// as `'\''` (HAProxy joins adjacent quoted and escaped pieces into one word).
pub fn quote(arg: &str) -> Result<Cow<'_, str>, String> {
    refuse_control(arg)?;
    let bare = |b: u8| b.is_ascii_alphanumeric() || b"-_.:/@%+=,()[]{}!<>*^~?|&;".contains(&b);
    if !arg.is_empty() && arg.bytes().all(bare) {
        Ok(Cow::Borrowed(arg))
    } else {
        Ok(Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''"))))
    }
}

fn refuse_control(text: &str) -> Result<(), String> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "contains the control character {c:?}, which could start a new line in the configuration: {text:?}"
        )),
        None => Ok(()),
    }
}

fn check_map_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "map file name {name:?} is not valid: use letters, digits, `-`, `_` and `.`"
        ))
    }
}

fn check_map_entry(key: &str, value: &str) -> Result<(), String> {
    refuse_control(key)?;
    refuse_control(value)?;
    if key.is_empty() || key.contains(char::is_whitespace) || key.starts_with('#') {
        return Err(format!(
            "key {key:?} is not valid: it must be one word, not starting with `#`"
        ));
    }
    if value.trim() != value {
        return Err(format!(
            "value {value:?} of key {key} has leading or trailing whitespace"
        ));
    }
    Ok(())
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

    #[test]
    fn quoting_keeps_plain_words_and_protects_the_rest() {
        assert_eq!(quote("%[var(txn.backend)]").unwrap(), "%[var(txn.backend)]");
        assert_eq!(quote("").unwrap(), "''");
        assert_eq!(quote("a b").unwrap(), "'a b'");
        assert_eq!(quote("${HOME}").unwrap(), "'${HOME}'");
        assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
        assert_eq!(quote("#x").unwrap(), "'#x'");
        assert_eq!(quote("a\\b").unwrap(), r"'a\b'");
        assert!(quote("a\nfrontend evil").is_err());
        assert!(quote("a\rb").is_err());
        assert!(quote("a\u{85}b").is_err());
    }

    #[test]
    fn keywords_and_names_are_checked() {
        assert!(directive_line("timeout connect", &["5s".into()], None).is_ok());
        assert!(directive_line("bind\n", &[], None).is_err());
        assert!(directive_line("a  b", &[], None).is_err());
        assert!(directive_line("x", &[], Some("line\nbreak")).is_err());
        assert!(section_header(SectionKind::Backend, Some("a b")).is_err());
        assert!(section_header(SectionKind::Backend, None).is_err());
        assert_eq!(
            section_header(SectionKind::Defaults, None).unwrap(),
            "defaults"
        );
    }

    #[test]
    fn map_entries_are_checked() {
        assert!(check_map_entry("a.example.com", "be").is_ok());
        assert!(check_map_entry("a b", "be").is_err());
        assert!(check_map_entry("a", " be").is_err());
        assert!(check_map_name("../x").is_err());
    }
}
