//! Guests' structured output -> configuration text, in the order of their parts' slots
//! ([`crate::guests::parts`]). Pure: no I/O.
//!
//! The host writes the text and quotes every argument so HAProxy reads back exactly the string a
//! guest meant. Control characters are refused, so no value can start a new line or section.

use crate::bindings::{Directive, MapFile, Section, SectionKind};
use crate::fragment::Fragment;
use crate::guests::Part;
use crate::in_step::InStep;
use std::borrow::Cow;
use std::sync::Arc;

/// Where map files and certificates go, relative to the configuration file's directory.
pub const MAPS_DIR: &str = "maps";
pub const CERTS_DIR: &str = "certs";

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{part}: {message}")]
    Invalid { part: String, message: String },
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
    /// `(file name, contents)`, sorted by name, written into the certificates directory
    /// ([`crate::tls::Certificates::files`]); empty until [`Assembled::with_certificates`].
    pub certs: Vec<(String, String)>,
    /// `(first line number, description)` of each part and section, in order.
    origins: Arc<Origins>,
}

/// `(first line number, description)` of each part and section, in order.
type Origins = Vec<(usize, Arc<str>)>;

impl Assembled {
    /// This configuration with the files of `certificates`.
    pub fn with_certificates(mut self, certificates: &crate::tls::Certificates) -> Self {
        self.certs = certificates.files();
        self
    }

    /// Which part (and section) wrote line `line` (1-based), e.g. `guest http (bundled), backend x`.
    pub fn origin_of(&self, line: usize) -> Option<&str> {
        let index = self.origins.partition_point(|(first, _)| *first <= line);
        index.checked_sub(1).map(|i| &*self.origins[i].1)
    }
}

/// What `Written` keeps `item`'s text under: its address, held while it is kept.
fn key<T>(item: &Arc<T>) -> usize {
    Arc::as_ptr(item).addr()
}

/// The text of each section and map file of the last assembly, by the shared object it was
/// written from: assembling again costs a look-up for what did not change.
#[derive(Default)]
pub struct Written {
    /// In the order they were written.
    sections: Vec<(usize, Option<WrittenSection>)>,
    maps: foldhash::HashMap<usize, WrittenMap>,
    /// The length of the last text: room made at once.
    config_len: usize,
    /// The origins of the last text.
    origins: Arc<Origins>,
}

struct WrittenSection {
    /// Held, so that its address is not reused while it is a key.
    section: Arc<Section>,
    /// The part's label and where the section is said to come from.
    label: Arc<str>,
    origin: Arc<str>,
    text: String,
    lines: usize,
}

struct WrittenMap {
    map: Arc<MapFile>,
    contents: String,
}

/// Write the configuration text of `outputs`, in order.
pub fn assemble(outputs: &[(&Part, Output)]) -> Result<Assembled, AssembleError> {
    assemble_with(outputs, &mut Written::default())
}

/// [`assemble`], taking the text of each section and map file that `written` has from there,
/// and leaving there the texts of this one.
pub fn assemble_with(
    outputs: &[(&Part, Output)],
    written: &mut Written,
) -> Result<Assembled, AssembleError> {
    let sections = written.sections.len();
    let before = InStep::new(std::mem::take(&mut written.sections));
    let mut text = Text {
        // With room to grow: a text a byte longer than the last one (an address with one more
        // digit) would otherwise be copied whole into a buffer twice its size.
        buf: String::with_capacity(written.config_len + written.config_len / 16),
        origins: OriginsSoFar {
            last: std::mem::take(&mut written.origins),
            same: 0,
            own: None,
        },
        now: Vec::with_capacity(sections),
        before,
        lines: 0,
    };
    let mut maps_before = std::mem::take(&mut written.maps);
    text.push("# Written by wasmconfd. Changes made here are overwritten.\n");
    // (name, the guest that wrote it, contents)
    let mut maps: Vec<(String, String, String)> = Vec::new();
    for (part, output) in outputs {
        let kind = match output {
            Output::Static(_) => "static file",
            Output::Fragment(_) => "guest",
        };
        let label: Arc<str> = format!("{kind} {} ({})", part.slot, part.origin).into();
        text.push(&format!("\n# --- {label} ---\n"));
        text.origin(&label);
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
                text.sections(&label, &fragment.sections).map_err(invalid)?;
                for map in &fragment.maps {
                    if let Some((_, owner, _)) = maps.iter().find(|(name, _, _)| *name == map.name)
                    {
                        let message =
                            format!("map file {} is also written by guest {owner}", map.name);
                        return Err(invalid(message));
                    }
                    let kept = match maps_before.remove(&key(map)) {
                        Some(kept) => kept,
                        None => WrittenMap {
                            map: map.clone(),
                            contents: map_contents(map).map_err(invalid)?,
                        },
                    };
                    let contents = kept.contents.clone();
                    maps.push((map.name.clone(), part.name().to_string(), contents));
                    written.maps.insert(key(&kept.map), kept);
                }
            }
        }
    }
    maps.sort();
    written.sections = text.now;
    written.config_len = text.buf.len();
    written.origins = text.origins.finish();
    Ok(Assembled {
        config: text.buf,
        maps: maps
            .into_iter()
            .map(|(name, _, contents)| (name, contents))
            .collect(),
        certs: Vec::new(),
        origins: written.origins.clone(),
    })
}

/// Whether the host can write `fragment`: valid section names and keywords, valid map files, no
/// control characters anywhere. A section or map file equal to the one in the same place of
/// `checked`, a fragment that passed before, is not checked again.
pub fn check_fragment(fragment: &Fragment, checked: Option<&Fragment>) -> Result<(), String> {
    for (i, section) in fragment.sections.iter().enumerate() {
        if !same_place(section, i, checked.map(|c| &c.sections[..])) {
            section_text(section)?;
        }
    }
    for (i, map) in fragment.maps.iter().enumerate() {
        if !same_place(map, i, checked.map(|c| &c.maps[..])) {
            map_contents(map)?;
        }
    }
    Ok(())
}

/// Whether `before` holds `item` at index `i`.
fn same_place<T: PartialEq>(item: &T, i: usize, before: Option<&[T]>) -> bool {
    before.and_then(|before| before.get(i)) == Some(item)
}

/// The text of map file `map`: `key value` lines.
fn map_contents(map: &MapFile) -> Result<String, String> {
    check_map_name(&map.name)?;
    let mut contents = String::new();
    for entry in &map.entries {
        check_map_entry(&entry.key, &entry.value)
            .map_err(|e| format!("map file {}: {e}", map.name))?;
        contents.push_str(&entry.key);
        contents.push(' ');
        contents.push_str(&entry.value);
        contents.push('\n');
    }
    Ok(contents)
}

/// Configuration text that knows how many lines it has, and which part (and section) wrote
/// them.
struct Text {
    buf: String,
    lines: usize,
    origins: OriginsSoFar,
    /// The sections' texts of the last assembly, and of this one.
    before: InStep<WrittenSection>,
    now: Vec<(usize, Option<WrittenSection>)>,
}

impl Text {
    fn push(&mut self, s: &str) {
        self.lines += s.bytes().filter(|&b| b == b'\n').count();
        self.buf.push_str(s);
    }

    /// The next line is where `description` starts.
    fn origin(&mut self, description: &Arc<str>) {
        self.origins.push(self.lines + 1, description);
    }

    /// `sections` of the part `label`, each argument quoted. The text of a section the last
    /// assembly wrote is taken from there; the others are written anew, on several threads
    /// when there are thousands (a first render).
    fn sections(&mut self, label: &Arc<str>, sections: &[Arc<Section>]) -> Result<(), String> {
        let kept: Vec<Option<WrittenSection>> = (sections.iter())
            .map(|section| (self.before.take(key(section))).filter(|kept| kept.label == *label))
            .collect();
        let missing: Vec<&Arc<Section>> = (sections.iter().zip(&kept))
            .filter_map(|(section, kept)| kept.is_none().then_some(section))
            .collect();
        let write = |missing: &[&Arc<Section>]| -> Result<Vec<WrittenSection>, String> {
            (missing.iter())
                .map(|section| WrittenSection::new(section, label))
                .collect()
        };
        let mut anew = (crate::parallel::by_chunks(&missing, 2000, write).into_iter())
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten();
        for (i, kept) in kept.into_iter().enumerate() {
            if i > 0 {
                self.push("\n");
            }
            let written = kept
                .or_else(|| anew.next())
                .expect("one written per missing");
            self.origin(&written.origin);
            self.buf.push_str(&written.text);
            self.lines += written.lines;
            self.now.push((key(&written.section), Some(written)));
        }
        Ok(())
    }
}

impl WrittenSection {
    /// `section` of the part `label`, written.
    fn new(section: &Arc<Section>, label: &Arc<str>) -> Result<WrittenSection, String> {
        let (header, text) = section_text(section)?;
        Ok(WrittenSection {
            section: section.clone(),
            label: label.clone(),
            origin: format!("{label}, section `{header}`").into(),
            // The header's, and one per directive: none holds a line break.
            lines: 1 + section.directives.len(),
            text,
        })
    }
}

/// The origins of a text being written: those of the last text, shared, as long as they are the
/// same. Most changes move no line, and copying every section's description (an `Arc` each,
/// scattered in memory) was most of the assembly's time at each change.
struct OriginsSoFar {
    last: Arc<Origins>,
    /// How many of `last` this text has so far, when it has only those.
    same: usize,
    /// This text's own, once they differ.
    own: Option<Origins>,
}

impl OriginsSoFar {
    fn push(&mut self, line: usize, description: &Arc<str>) {
        let own = match &mut self.own {
            Some(own) => own,
            None => {
                let next = self.last.get(self.same);
                let alike = |(l, d): &(usize, Arc<str>)| {
                    *l == line && (Arc::ptr_eq(d, description) || d == description)
                };
                if next.is_some_and(alike) {
                    self.same += 1;
                    return;
                }
                self.own.insert(self.last[..self.same].to_vec())
            }
        };
        own.push((line, description.clone()));
    }

    fn finish(self) -> Arc<Origins> {
        match self.own {
            Some(own) => Arc::new(own),
            None if self.same == self.last.len() => self.last,
            None => Arc::new(self.last[..self.same].to_vec()),
        }
    }
}

/// The header of `section` and its text, each argument quoted.
fn section_text(section: &Section) -> Result<(String, String), String> {
    let header = section_header(section.kind, section.name.as_deref())?;
    let mut text = header.clone();
    text.push('\n');
    for directive in &section.directives {
        text.push_str("    ");
        write_directive(&mut text, directive).map_err(|e| format!("section `{header}`: {e}"))?;
        text.push('\n');
    }
    Ok((header, text))
}

/// `backend NAME`, `global`, ...
fn section_header(kind: SectionKind, name: Option<&str>) -> Result<String, String> {
    let keyword = kind.keyword();
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
pub fn directive_line(directive: &Directive) -> Result<String, String> {
    let mut line = String::new();
    write_directive(&mut line, directive)?;
    Ok(line)
}

/// [`directive_line`], written at the end of `out`.
pub fn write_directive(out: &mut String, directive: &Directive) -> Result<(), String> {
    let keyword = directive.keyword();
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
    out.push_str(keyword);
    for (i, arg) in directive.args().enumerate() {
        let quoted = quote(arg).map_err(|e| format!("argument {} of `{keyword}` {e}", i + 1))?;
        out.push(' ');
        out.push_str(&quoted);
    }
    if let Some(comment) = directive.comment() {
        refuse_control(comment).map_err(|e| format!("comment of `{keyword}` {e}"))?;
        out.push_str("  # ");
        out.push_str(comment);
    }
    Ok(())
}

/// The bytes an argument is written bare with, when it has no other: ones HAProxy never
/// interprets (and so no control character).
const BARE: [bool; 256] = {
    let mut bare = [false; 256];
    let others = b"-_.:/@%+=,()[]{}!<>*^~?|&;";
    let mut i = 0;
    while i < others.len() {
        bare[others[i] as usize] = true;
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        bare[b] |= (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    bare
};

/// `arg` as HAProxy must read it to get `arg` back: as is when it holds only characters HAProxy
/// never interprets, else in single quotes (where nothing is interpreted), with each `'` written
/// as `'\''` (HAProxy joins adjacent quoted and escaped pieces into one word).
pub fn quote(arg: &str) -> Result<Cow<'_, str>, String> {
    if !arg.is_empty() && arg.bytes().all(|b| BARE[usize::from(b)]) {
        return Ok(Cow::Borrowed(arg));
    }
    refuse_control(arg)?;
    Ok(Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''"))))
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
        let line = |keyword, args: &[&str], comment| {
            directive_line(&Directive::new(keyword, args).with_comment(comment))
        };
        assert!(line("timeout connect", &["5s"], None).is_ok());
        assert!(line("bind\n", &[], None).is_err());
        assert!(line("a  b", &[], None).is_err());
        assert!(line("x", &[], Some("line\nbreak")).is_err());
        assert!(section_header(SectionKind::Backend, Some("a b")).is_err());
        assert!(section_header(SectionKind::Backend, None).is_err());
        assert_eq!(
            section_header(SectionKind::Defaults, None).unwrap(),
            "defaults"
        );
    }

    /// `backend NAME` with one server at `server`.
    fn backend(name: &str, server: &str) -> Section {
        Section {
            kind: SectionKind::Backend,
            name: Some(name.into()),
            directives: vec![Directive::new("server", ["s", server])],
        }
    }

    #[test]
    fn a_fragment_is_checked_where_it_differs_from_one_that_passed() {
        let fragment = |sections: Vec<Section>| Fragment::new(sections, []);
        let good = fragment(vec![
            backend("a", "10.0.0.1:80"),
            backend("b", "10.0.0.2:80"),
        ]);
        assert!(check_fragment(&good, None).is_ok());
        assert!(check_fragment(&good, Some(&good)).is_ok());

        let broken = fragment(vec![backend("a", "10.0.0.1:80"), backend("b", "bad\nline")]);
        let error = check_fragment(&broken, Some(&good)).unwrap_err();
        assert!(error.contains("backend b"), "{error}");
        let moved = fragment(vec![backend("b", "bad\nline"), backend("a", "10.0.0.1:80")]);
        assert!(check_fragment(&moved, Some(&good)).is_err());
    }

    #[test]
    fn map_entries_are_checked() {
        assert!(check_map_entry("a.example.com", "be").is_ok());
        assert!(check_map_entry("a b", "be").is_err());
        assert!(check_map_entry("a", " be").is_err());
        assert!(check_map_name("../x").is_err());
    }

    fn part() -> Part {
        Part {
            slot: "20-http".into(),
            origin: "bundled".into(),
            source: crate::guests::parts::Source::Static(String::new()),
        }
    }

    #[test]
    fn assembling_again_takes_the_kept_texts_and_gives_what_a_first_assembly_gives() {
        let part = part();
        let hosts = MapFile {
            name: "hosts.map".into(),
            entries: vec![crate::bindings::MapEntry {
                key: "a.example.com".into(),
                value: "a".into(),
            }],
        };
        let first = Fragment::new(
            [backend("a", "10.0.0.1:80"), backend("b", "10.0.0.2:80")],
            [hosts],
        );
        let mut written = Written::default();
        let once = |f: &Fragment, w: &mut Written| {
            assemble_with(&[(&part, Output::Fragment(f))], w).unwrap()
        };
        assert_eq!(
            once(&first, &mut written),
            assemble(&[(&part, Output::Fragment(&first))]).unwrap()
        );

        // One section changed: its new text, the others as kept.
        let mut second = first.clone();
        second.sections[1] = Arc::new(backend("b", "10.0.0.3:80"));
        let again = once(&second, &mut written);
        assert!(
            again.config.contains("server s 10.0.0.3:80") && !again.config.contains("10.0.0.2")
        );
        assert_eq!(
            again,
            assemble(&[(&part, Output::Fragment(&second))]).unwrap()
        );
        assert_eq!(
            again.origin_of(again.config.lines().count()),
            Some("guest 20-http (bundled), section `backend b`")
        );

        // A section that grows moves the lines of the ones after it, and one that goes takes
        // its own: the origins are those of a first assembly each time.
        let mut grown = backend("a", "10.0.0.1:80");
        grown
            .directives
            .extend(backend("a", "10.0.0.4:80").directives);
        let mut third = second.clone();
        third.sections[0] = Arc::new(grown);
        let fresh = |f: &Fragment| assemble(&[(&part, Output::Fragment(f))]).unwrap();
        let last_line = |a: &Assembled| a.origin_of(a.config.lines().count()).map(str::to_string);
        let again = once(&third, &mut written);
        assert_eq!(again, fresh(&third));
        assert_eq!(
            last_line(&again).as_deref(),
            Some("guest 20-http (bundled), section `backend b`")
        );
        let mut fourth = third.clone();
        fourth.sections.pop();
        let again = once(&fourth, &mut written);
        assert_eq!(again, fresh(&fourth));
        assert_eq!(
            last_line(&again).as_deref(),
            Some("guest 20-http (bundled), section `backend a`")
        );
        // Sections kept but moved are found where they went.
        let mut fifth = second.clone();
        fifth.sections.reverse();
        assert_eq!(once(&fifth, &mut written), fresh(&fifth));
    }

    #[test]
    fn thousands_of_sections_written_on_several_threads_come_in_order() {
        let part = part();
        let sections = || {
            (0..5000).map(|i| {
                backend(
                    &format!("b{i}"),
                    &format!("10.0.{}.{}:80", i / 250, i % 250),
                )
            })
        };
        let first = Fragment::new(sections(), []);
        let mut written = Written::default();
        let once =
            |f: &Fragment, w: &mut Written| assemble_with(&[(&part, Output::Fragment(f))], w);
        let assembled = once(&first, &mut written).unwrap();
        let headers: Vec<&str> = (assembled.config.lines())
            .filter(|l| l.starts_with("backend "))
            .collect();
        let expected: Vec<String> = (0..5000).map(|i| format!("backend b{i}")).collect();
        assert_eq!(headers, expected);
        assert!(
            assembled
                .config
                .contains("backend b4999\n    server s 10.0.19.249:80\n")
        );
        assert_eq!(
            assembled.origin_of(assembled.config.lines().count()),
            Some("guest 20-http (bundled), section `backend b4999`")
        );

        // One kept among thousands written anew: in its place.
        let mut second = Fragment::new(sections(), []);
        second.sections[2500] = first.sections[2500].clone();
        let fresh = assemble(&[(&part, Output::Fragment(&second))]).unwrap();
        assert_eq!(once(&second, &mut written).unwrap(), fresh);
        assert_eq!(fresh, assembled);

        // Of two sections the host cannot write, in different threads' parts, the first is named.
        let mut bad = Fragment::new(sections(), []);
        bad.sections[1000] = Arc::new(backend("b1000", "bad\nline"));
        bad.sections[4000] = Arc::new(backend("b4000", "bad\nline"));
        let error = once(&bad, &mut written).unwrap_err().to_string();
        assert!(
            error.contains("backend b1000") && !error.contains("b4000"),
            "{error}"
        );
    }
}
