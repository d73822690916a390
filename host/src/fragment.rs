//! A guest's output as the host holds it.
//!
//! The WIT records a guest returns (`fragment`, `section`, `directive`, `placement`) are lifted
//! into the types here rather than into the ones `bindgen!` makes: a [`Directive`] keeps its
//! keyword and arguments in one string. At 10,000 services a guest returns some 80,000 lines,
//! most of them `server` lines of four words, each kept in a cache and again in its merged
//! section: as a `String` per word and a `Vec` of them, that was five allocations a line.

use crate::bindings::{MapFile, SectionKind};
use std::sync::Arc;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext,
    wasmtime_environ::component::StringEncoding,
};
use wasmtime::component::{ComponentType, Lift};

/// The WIT `directive` as `bindgen!` makes it: its type, and the slow way to lift one.
type WitDirective = crate::bindings::wasmconfd::haproxy::types::Directive;

/// One configuration line (the WIT record `directive`): a keyword, its arguments and an
/// optional comment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Directive {
    /// The keyword, then each argument, one after another.
    text: Box<str>,
    /// Where in `text` each ends: the keyword, then each argument.
    ends: Box<[u32]>,
    comment: Option<Box<str>>,
}

impl Directive {
    /// `keyword args...`, without a comment.
    pub fn new<A: AsRef<str>>(keyword: &str, args: impl IntoIterator<Item = A>) -> Directive {
        let mut text = String::from(keyword);
        let mut ends = vec![end(&text)];
        for arg in args {
            text.push_str(arg.as_ref());
            ends.push(end(&text));
        }
        Directive {
            text: text.into(),
            ends: ends.into(),
            comment: None,
        }
    }

    /// This directive with `comment` written after it.
    pub fn with_comment(mut self, comment: Option<&str>) -> Directive {
        self.comment = comment.map(Box::from);
        self
    }

    pub fn keyword(&self) -> &str {
        &self.text[..self.ends[0] as usize]
    }

    /// The arguments, in order.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        (self.ends.windows(2)).map(|w| &self.text[w[0] as usize..w[1] as usize])
    }

    /// Argument `i`, from 0.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args().nth(i)
    }

    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }
}

/// Where a word that ends `text` ends: a directive is shorter than 4 GiB.
fn end(text: &str) -> u32 {
    u32::try_from(text.len()).expect("a directive shorter than 4 GiB")
}

impl std::fmt::Debug for Directive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("Directive"))
            .field("keyword", &self.keyword())
            .field("args", &self.args().collect::<Vec<_>>())
            .field("comment", &self.comment)
            .finish()
    }
}

/// Written and read as the WIT record is (`keyword`, `args`, `comment`): the fragments file
/// written by a host before this type keeps loading.
#[derive(serde::Serialize, serde::Deserialize)]
struct DirectiveFields<'a> {
    #[serde(borrow)]
    keyword: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    args: Vec<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    comment: Option<std::borrow::Cow<'a, str>>,
}

impl serde::Serialize for Directive {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DirectiveFields {
            keyword: self.keyword().into(),
            args: self.args().map(Into::into).collect(),
            comment: self.comment().map(Into::into),
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Directive {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = DirectiveFields::deserialize(deserializer)?;
        Ok(Directive::new(&fields.keyword, &fields.args).with_comment(fields.comment.as_deref()))
    }
}

impl From<WitDirective> for Directive {
    fn from(d: WitDirective) -> Self {
        Directive::new(&d.keyword, &d.args).with_comment(d.comment.as_deref())
    }
}

// Lifted as the WIT record `directive`, which `WitDirective` type-checks. Its strings are read
// straight out of the guest's memory into one `String`, checked as wasmtime checks them (in
// bounds, aligned, UTF-8); a guest whose strings are not UTF-8 is lifted the slow way.
unsafe impl ComponentType for Directive {
    type Lower = <WitDirective as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = WitDirective::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        WitDirective::typecheck(ty, types)
    }
}

unsafe impl Lift for Directive {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        WitDirective::linear_lift_from_flat(cx, ty, src).map(Directive::from)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        if cx.options().string_encoding != StringEncoding::Utf8 {
            return WitDirective::linear_lift_from_memory(cx, ty, bytes).map(Directive::from);
        }
        lift_directive(cx.memory(), bytes, |bytes| cx.consume_fuel(bytes))
    }
}

// The record's layout in the canonical ABI: `keyword` (pointer, length) at 0, `args` (pointer,
// count of (pointer, length) pairs) at 8, `comment` (discriminant at 16, pointer and length at
// 20), 28 bytes aligned to 4.
const _: () = assert!(WitDirective::ABI.size32 == 28 && WitDirective::ABI.align32 == 4);

/// The directive whose record is `record`, its strings in `memory`; what it copies is first
/// charged to `fuel` (the call's hostcall fuel, which wasmtime charges for each string and list
/// it lifts, so that what a guest returns cannot take the host's memory).
fn lift_directive(
    memory: &[u8],
    record: &[u8],
    mut fuel: impl FnMut(usize) -> wasmtime::Result<()>,
) -> wasmtime::Result<Directive> {
    let word = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().unwrap()) as usize;
    let bytes = |ptr: usize, len: usize| {
        (ptr.checked_add(len))
            .and_then(|end| memory.get(ptr..end))
            .ok_or_else(|| wasmtime::format_err!("a directive's string or list is out of bounds"))
    };
    let string = |ptr, len| Ok::<_, wasmtime::Error>(std::str::from_utf8(bytes(ptr, len)?)?);

    let (args_ptr, count) = (word(8), word(12));
    if args_ptr % 4 != 0 {
        wasmtime::bail!("a directive's list of arguments is not aligned");
    }
    let pairs = bytes(args_ptr, count.saturating_mul(8))?;
    let args = pairs.chunks_exact(8).map(|pair| {
        let half = |at: usize| u32::from_le_bytes(pair[at..at + 4].try_into().unwrap()) as usize;
        (half(0), half(4))
    });
    // Made to measure, so that making it a `Box<str>` does not copy it again. Its strings may
    // all be one string of the guest's memory, over and over.
    let length = args
        .clone()
        .fold(word(4), |sum, (_, len)| sum.saturating_add(len));
    if length > u32::MAX as usize {
        wasmtime::bail!("a directive of {length} bytes, longer than 4 GiB");
    }
    fuel(length.saturating_add(count.saturating_add(1).saturating_mul(4)))?;
    let mut text = String::with_capacity(length.min(memory.len()));
    text.push_str(string(word(0), word(4))?);
    let mut ends = Vec::with_capacity(count + 1);
    ends.push(end(&text));
    for (ptr, len) in args {
        text.push_str(string(ptr, len)?);
        ends.push(end(&text));
    }
    let comment = match record[16] {
        0 => None,
        1 => {
            fuel(word(24))?;
            Some(Box::from(string(word(20), word(24))?))
        }
        _ => wasmtime::bail!("a directive's comment is neither none nor some"),
    };
    Ok(Directive {
        text: text.into(),
        ends: ends.into(),
        comment,
    })
}

/// One section (the WIT record `section`): a header line and its directives.
#[derive(
    ComponentType, Lift, Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[component(record)]
pub struct Section {
    pub kind: SectionKind,
    pub name: Option<String>,
    pub directives: Vec<Directive>,
}

impl Section {
    /// Whether `other` is this section by kind and name, whatever its directives.
    pub fn same_title(&self, other: &Section) -> bool {
        self.kind == other.kind && self.name == other.name
    }

    /// How messages name the section: `backend NAME`, `global`.
    pub fn title(&self) -> String {
        match &self.name {
            Some(name) => format!("{} {name}", self.kind.keyword()),
            None => self.kind.keyword().to_string(),
        }
    }
}

/// Where the `server` lines of one service go (the WIT record `placement`).
#[derive(ComponentType, Lift, Debug, Clone, PartialEq, Eq)]
#[component(record)]
pub struct Placement {
    pub section: String,
    pub servers: Vec<Directive>,
}

/// The WIT record `fragment`, as a guest returns it; the host holds it as [`Fragment`].
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct WitFragment {
    pub sections: Vec<Section>,
    pub maps: Vec<MapFile>,
}

/// A guest's output: the WIT `fragment` with each section and map file shared (`Arc`), so that
/// keeping an output, passing it on and comparing it with the last one costs a pointer per
/// section where nothing changed, not a copy of the whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fragment {
    pub sections: Vec<Arc<Section>>,
    pub maps: Vec<Arc<MapFile>>,
}

impl From<WitFragment> for Fragment {
    fn from(fragment: WitFragment) -> Self {
        Fragment {
            sections: fragment.sections.into_iter().map(Arc::new).collect(),
            maps: fragment.maps.into_iter().map(Arc::new).collect(),
        }
    }
}

impl Fragment {
    pub fn new(
        sections: impl IntoIterator<Item = Section>,
        maps: impl IntoIterator<Item = MapFile>,
    ) -> Self {
        Fragment {
            sections: sections.into_iter().map(Arc::new).collect(),
            maps: maps.into_iter().map(Arc::new).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directive_keeps_its_keyword_arguments_and_comment() {
        let d = Directive::new("http-request", ["set-header", "X-Ünï", ""]).with_comment(Some("c"));
        assert_eq!(d.keyword(), "http-request");
        assert_eq!(d.args().collect::<Vec<_>>(), ["set-header", "X-Ünï", ""]);
        assert_eq!(
            (d.args().len(), d.arg(1), d.arg(3)),
            (3, Some("X-Ünï"), None)
        );
        assert_eq!(d.comment(), Some("c"));
        let bare = Directive::new("option", [] as [&str; 0]);
        assert_eq!(
            (bare.keyword(), bare.args().len(), bare.comment()),
            ("option", 0, None)
        );
        assert_ne!(Directive::new("a", ["bc"]), Directive::new("ab", ["c"]));
    }

    #[test]
    fn a_directive_is_written_as_the_wit_record_is() {
        let d = Directive::new("server", ["a", "10.0.0.1:80"]);
        let json = r#"{"keyword":"server","args":["a","10.0.0.1:80"],"comment":null}"#;
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
        assert_eq!(serde_json::from_str::<Directive>(json).unwrap(), d);
        let escaped = r#"{"keyword":"x","args":["a\"b"],"comment":"c\nd"}"#;
        let read: Directive = serde_json::from_str(escaped).unwrap();
        assert_eq!((read.arg(0), read.comment()), (Some("a\"b"), Some("c\nd")));
    }

    /// A guest's memory holding `strings` from address 100 on, and the (address, length) of each.
    fn memory(strings: &[&str]) -> (Vec<u8>, Vec<(u32, u32)>) {
        let mut memory = vec![0; 100];
        let places = (strings.iter())
            .map(|s| {
                let at = memory.len() as u32;
                memory.extend_from_slice(s.as_bytes());
                (at, s.len() as u32)
            })
            .collect();
        (memory, places)
    }

    /// A `directive` record: keyword and comment at these places, arguments listed at `args`.
    fn record(keyword: (u32, u32), args: (u32, u32), comment: Option<(u32, u32)>) -> Vec<u8> {
        let (tag, comment) = match comment {
            Some(c) => (1, c),
            None => (0, (0, 0)),
        };
        [
            keyword.0, keyword.1, args.0, args.1, tag, comment.0, comment.1,
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
    }

    #[test]
    fn a_directive_is_read_out_of_a_guests_memory_and_checked() {
        let (mut memory, at) = memory(&["server", "a", "", "10.0.0.1:80", "ünï"]);
        while memory.len() % 4 != 0 {
            memory.push(0);
        }
        let list = memory.len() as u32;
        let huge = list + 3 * 8;
        for (ptr, len) in at[1..4].iter().chain([&(100, 3 << 30), &(100, 3 << 30)]) {
            memory.extend(ptr.to_le_bytes().into_iter().chain(len.to_le_bytes()));
        }
        let unlimited = |_| Ok(());
        let lifted = lift_directive(&memory, &record(at[0], (list, 3), Some(at[4])), unlimited);
        let lifted = lifted.unwrap();
        let expected = Directive::new("server", ["a", "", "10.0.0.1:80"]).with_comment(Some("ünï"));
        assert_eq!(lifted, expected);
        let without = lift_directive(&memory, &record(at[0], (list, 0), None), unlimited);
        let without = without.unwrap();
        assert_eq!(without, Directive::new("server", [] as [&str; 0]));

        let error = |record: Vec<u8>| {
            let lifted = lift_directive(&memory, &record, unlimited);
            lifted.unwrap_err().to_string()
        };
        let past_the_end = memory.len() as u32;
        assert!(error(record((past_the_end, 1), (list, 0), None)).contains("out of bounds"));
        assert!(error(record((u32::MAX, 2), (list, 0), None)).contains("out of bounds"));
        assert!(error(record(at[0], (list, 4), None)).contains("out of bounds"));
        assert!(error(record(at[0], (list + 1, 1), None)).contains("not aligned"));
        assert!(error(record(at[0], (list, u32::MAX), None)).contains("out of bounds"));
        // Two arguments of 3 GiB each, refused before either is read.
        assert!(error(record(at[0], (huge, 2), None)).contains("longer than 4 GiB"));
        let mut bad_tag = record(at[0], (list, 0), None);
        bad_tag[16] = 2;
        assert!(error(bad_tag).contains("neither none nor some"));
        // The middle of `ü`: not UTF-8.
        let split = (at[4].0 + 1, 1);
        assert!(error(record(split, (list, 0), None)).contains("utf-8"));
    }

    #[test]
    fn what_a_directive_copies_is_charged_and_a_refusal_stops_its_lift() {
        // `server` with one 1,000-byte argument listed three times, and a comment.
        let (mut memory, at) = memory(&["server", &"x".repeat(1000), "c"]);
        while memory.len() % 4 != 0 {
            memory.push(0);
        }
        let list = memory.len() as u32;
        for _ in 0..3 {
            memory.extend(
                at[1]
                    .0
                    .to_le_bytes()
                    .into_iter()
                    .chain(at[1].1.to_le_bytes()),
            );
        }
        let directive = record(at[0], (list, 3), Some(at[2]));
        let mut charged = Vec::new();
        let lifted = lift_directive(&memory, &directive, |bytes| {
            charged.push(bytes);
            Ok(())
        });
        assert_eq!(lifted.unwrap().args().len(), 3);
        // The words (6 + 3 x 1,000 bytes) and where each ends (4 x 4 bytes), then the comment.
        assert_eq!(charged, [6 + 3000 + 16, 1]);

        let refused = lift_directive(&memory, &directive, |_| wasmtime::bail!("no fuel left"));
        assert_eq!(refused.unwrap_err().to_string(), "no fuel left");
    }
}
