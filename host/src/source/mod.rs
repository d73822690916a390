//! Where the Kubernetes objects come from: a snapshot file, exactly what
//! `kubectl get services,endpointslices,endpoints -A -o yaml` prints (YAML or JSON, a `List` or
//! a stream of documents; with `namespaces` too for scopes that select namespaces by label, and
//! `secrets` of type `kubernetes.io/tls` for certificates), or
//! the API server itself ([`kubernetes`]).

pub mod compact;
pub mod events;
pub mod kubernetes;
pub mod watch;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubernetes::Slim;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::Arc;

use std::borrow::Cow;

/// The objects the model is built from. Shared, not copied: the watch caches hold the same
/// objects, and a render takes them without copying a cluster's worth of objects.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub services: Vec<Arc<compact::Service>>,
    pub endpoint_slices: Vec<Arc<compact::EndpointSlice>>,
    pub endpoints: Vec<Arc<compact::Endpoints>>,
    /// Read only for scopes that select namespaces by label.
    pub namespaces: Vec<Arc<Namespace>>,
    /// `kubernetes.io/tls` Secrets, read only with `--tls-secrets` (`--include-secrets` for a
    /// snapshot).
    pub secrets: Vec<Arc<Secret>>,
}

/// Dropped from the annotations guests see: large, and a copy of the object itself.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object, or part of one, that was left out of the model, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `Service namespace/name`, `EndpointSlice namespace/name` or `Endpoints namespace/name`,
    /// with control characters escaped.
    pub object: String,
    /// What is wrong and what to do, with control characters escaped.
    pub reason: String,
    /// The whole object was left out; otherwise a part of it, which `reason` names.
    pub whole: bool,
}

impl Problem {
    /// The whole object is left out.
    pub fn new(object: &str, reason: &str) -> Problem {
        Problem {
            object: printable(object).into_owned(),
            reason: printable(reason).into_owned(),
            whole: true,
        }
    }

    /// A part of the object (an endpoint, a port), which `reason` names, is left out.
    pub fn part(object: &str, reason: &str) -> Problem {
        Problem {
            whole: false,
            ..Problem::new(object, reason)
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), so a value from the cluster or a
/// guest cannot forge or break log lines.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Log each object (or part of one) that was left out, and why.
pub fn warn_skipped(problems: &[Problem]) {
    for problem in problems {
        let skipped = if problem.whole { "skipped: " } else { "" };
        tracing::warn!(object = %problem.object, "{skipped}{}", problem.reason);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("snapshot {path} is not valid {format}: {message}")]
    Syntax {
        path: String,
        format: &'static str,
        message: String,
    },
}

/// YAML nesting deeper than this is refused before parsing. Kubernetes objects nest about ten
/// levels; a file nested thousands deep is an attack on the parser (YAML's is quadratic in it).
/// JSON's parser skips what is not read without recursion and stops at 128 levels in what is,
/// so it needs no pass before: a JSON document that does not parse is reported as too deep
/// when it nests deeper than this.
pub const MAX_DEPTH: usize = 100;

/// A snapshot file's text, read.
pub struct Snapshot {
    path: String,
    text: String,
}

/// A snapshot file, opened: whether it is missing, not allowed or a directory is known by then,
/// before the time its reading takes.
pub struct SnapshotFile {
    path: String,
    file: std::fs::File,
    len: u64,
}

impl Snapshot {
    /// Open the snapshot file at `path`, to read with [`SnapshotFile::read`].
    pub fn open(path: &Path) -> Result<SnapshotFile, SnapshotError> {
        let opened = std::fs::File::open(path).and_then(|file| {
            let meta = file.metadata()?;
            if meta.is_dir() {
                return Err(std::io::ErrorKind::IsADirectory.into());
            }
            Ok((file, meta.len()))
        });
        let path = path.display().to_string();
        match opened {
            Ok((file, len)) => Ok(SnapshotFile { path, file, len }),
            Err(error) => Err(SnapshotError::Read { path, error }),
        }
    }

    /// Its objects. Objects that do not parse are reported as problems, not fatal.
    pub fn parse(&self) -> Result<(Objects, Vec<Problem>), SnapshotError> {
        parse_snapshot(&self.text).map_err(|(format, message)| SnapshotError::Syntax {
            path: self.path.clone(),
            format,
            message,
        })
    }
}

impl SnapshotFile {
    /// Its text.
    pub fn read(mut self) -> Result<Snapshot, SnapshotError> {
        let mut text = String::with_capacity(usize::try_from(self.len).unwrap_or(0));
        match std::io::Read::read_to_string(&mut self.file, &mut text) {
            Ok(_) => Ok(Snapshot {
                path: self.path,
                text,
            }),
            Err(error) => Err(SnapshotError::Read {
                path: self.path,
                error,
            }),
        }
    }
}

/// Parse snapshot text: JSON (when it starts with `{` or `[`, as `kubectl -o json` prints it)
/// or YAML, one `List` or many documents. The error says which format was read, and why not.
pub fn parse_snapshot(text: &str) -> Result<(Objects, Vec<Problem>), (&'static str, String)> {
    let too_deep =
        || format!("it nests deeper than {MAX_DEPTH} levels, which no Kubernetes object does");
    let mut objects = Objects::default();
    let mut problems = Vec::new();
    if text.trim_start().starts_with(['{', '[']) {
        // serde_json has a nesting limit of its own, so the depth is counted (for a clearer
        // message) only when the text does not parse: a full pass less on the way of every
        // render.
        let error = |e: serde_json::Error| {
            let message = if json_depth(text) > MAX_DEPTH {
                too_deep()
            } else {
                e.to_string()
            };
            ("JSON", message)
        };
        // `kubectl get -o json` prints one document, a List: its items are read while it is
        // still scanned. Several documents, or a document that does not parse, are read (and
        // the error said) one document at a time below.
        let mut one = serde_json::Deserializer::from_str(text);
        let (scanned, read) = crate::parallel::as_found(
            ITEMS_PER_PART,
            |found| {
                let scanned =
                    serde::de::DeserializeSeed::deserialize(DocumentSeed(found), &mut one);
                scanned.and_then(|scanned| one.end().map(|()| scanned))
            },
            |items| read_items(&items),
        );
        match scanned {
            Ok((kind, true)) if kind.ends_with("List") => {
                objects.add_read(read, &mut problems);
                return Ok((objects, problems));
            }
            Ok(_) => {
                objects.add_json(text, &mut problems);
                return Ok((objects, problems));
            }
            Err(_) => {}
        }
        let mut documents = serde_json::Deserializer::from_str(text).into_iter::<Document>();
        let mut start = 0;
        while let Some(document) = documents.next() {
            let document = document.map_err(error)?;
            let end = documents.byte_offset();
            match document.items {
                Some(items) if document.kind.ends_with("List") => {
                    objects.add_all_json(&items, &mut problems)
                }
                _ => objects.add_json(&text[start..end], &mut problems),
            }
            start = end;
        }
        return Ok((objects, problems));
    }
    if yaml_flow_depth(text) > MAX_DEPTH {
        return Err(("YAML", too_deep()));
    }
    let format = "YAML";
    for document in serde_yaml::Deserializer::from_str(text) {
        let value =
            serde_json::Value::deserialize(document).map_err(|e| (format, e.to_string()))?;
        let items = match value.get("kind").and_then(|k| k.as_str()) {
            Some(kind) if kind.ends_with("List") => value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default(),
            _ if value.is_null() => Vec::new(),
            _ => vec![value],
        };
        for item in items {
            if let Err(problem) = objects.add(item) {
                problems.push(problem);
            }
        }
    }
    Ok((objects, problems))
}

/// A JSON document: a `List` of items, or one object.
#[derive(Deserialize)]
struct Document<'a> {
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// How many items of a JSON List are read at a time, by one thread.
const ITEMS_PER_PART: usize = 500;

/// A JSON document, scanned: its `kind`, and whether it has `items`, each handed to the function
/// held as it is scanned.
struct DocumentSeed<'f, 'a>(&'f mut dyn FnMut(&'a RawValue));

impl<'de> serde::de::DeserializeSeed<'de> for DocumentSeed<'_, 'de> {
    type Value = (String, bool);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DocumentSeed<'_, 'de> {
    type Value = (String, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object or List")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let (mut kind, mut items) = (None, None);
        while let Some(key) = map.next_key::<Cow<str>>()? {
            match key.as_ref() {
                "kind" if kind.is_some() => return Err(A::Error::duplicate_field("kind")),
                "items" if items.is_some() => return Err(A::Error::duplicate_field("items")),
                "kind" => kind = Some(map.next_value()?),
                "items" => items = Some(map.next_value_seed(ItemsSeed(&mut *self.0))?),
                _ => map.next_value::<serde::de::IgnoredAny>().map(drop)?,
            }
        }
        Ok((kind.unwrap_or_default(), items.unwrap_or(false)))
    }
}

/// The `items` of a JSON document, each handed to the function held: whether there are (`null`
/// is none).
struct ItemsSeed<'f, 'a>(&'f mut dyn FnMut(&'a RawValue));

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed<'_, 'de> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(item) = seq.next_element()? {
            (self.0)(item);
        }
        Ok(true)
    }
}

/// The objects of `items` (JSON objects), and the problems with them.
fn read_items(items: &[&RawValue]) -> (Objects, Vec<Problem>) {
    let mut read = (Objects::default(), Vec::new());
    for item in items {
        read.0.add_json(item.get(), &mut read.1);
    }
    read
}

/// What identifies an object, read before the object itself.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: HeaderMeta,
}

#[derive(Deserialize, Default)]
struct HeaderMeta {
    namespace: Option<String>,
    name: Option<String>,
}

/// The `apiVersion` and `kind` of a JSON object, read from its first keys, where
/// `kubectl` puts them, without reading the rest of it.
#[derive(Default)]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

impl TypeMeta {
    fn of(item: &str) -> TypeMeta {
        let mut found = TypeMeta::default();
        // Stopping early leaves the object unfinished, which is an error to serde_json; what
        // was found by then is what counts.
        let _ = serde::Deserializer::deserialize_map(
            &mut serde_json::Deserializer::from_str(item),
            &mut found,
        );
        found
    }
}

impl<'de> serde::de::Visitor<'de> for &mut TypeMeta {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while self.api_version.is_none() || self.kind.is_none() {
            let Some(key) = map.next_key::<Cow<str>>()? else {
                break;
            };
            match key.as_ref() {
                "apiVersion" => self.api_version = Some(map.next_value()?),
                "kind" => self.kind = Some(map.next_value()?),
                _ => map.next_value::<serde::de::IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }
}

/// How deep JSON `text` nests: its brackets outside strings.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How deep YAML `text` nests in flow collections (`[`, `{` where a value starts, outside
/// quoted strings, comments and block scalars), which is where a YAML parser's time goes. Block
/// nesting costs the parser nothing and is bounded by its recursion limit.
fn yaml_flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    // YAML: inside a block scalar (`|`, `>`), the indentation its lines are deeper than.
    let mut block_scalar: Option<usize> = None;
    for line in text.split('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_scalar {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let (mut value_starts, mut after_space) = (true, true);
        let mut bytes = line.bytes().peekable();
        while let Some(b) = bytes.next() {
            if let Some(q) = quote {
                if b == b'\\' && q == b'"' {
                    bytes.next();
                } else if b == q && !(q == b'\'' && bytes.next_if_eq(&b'\'').is_some()) {
                    quote = None;
                }
                continue;
            }
            // Whether a value may start after this byte.
            let mut next_value_starts = matches!(b, b'-' | b':' | b'?' | b',');
            match b {
                b' ' | b'\t' | b'\r' => {
                    after_space = true;
                    continue;
                }
                b'"' if value_starts => quote = Some(b),
                b'\'' if value_starts => quote = Some(b),
                b'#' if after_space => break,
                b'[' | b'{' if depth > 0 || value_starts => {
                    depth += 1;
                    deepest = deepest.max(depth);
                    next_value_starts = true;
                }
                b']' | b'}' if depth > 0 => depth = depth.saturating_sub(1),
                b'|' | b'>' if value_starts && depth == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => {}
            }
            value_starts = next_value_starts;
            after_space = false;
        }
    }
    deepest
}

/// The snapshot format: a v1 `List` of every object, as YAML.
pub fn to_snapshot(objects: &Objects) -> Result<String, serde_yaml::Error> {
    let mut items = Vec::new();
    for service in &objects.services {
        items.push(serde_yaml::to_value(Service::from(&**service))?);
    }
    for slice in &objects.endpoint_slices {
        items.push(serde_yaml::to_value(EndpointSlice::from(&**slice))?);
    }
    for endpoints in &objects.endpoints {
        items.push(serde_yaml::to_value(Endpoints::from(&**endpoints))?);
    }
    for namespace in &objects.namespaces {
        items.push(serde_yaml::to_value(&**namespace)?);
    }
    for secret in &objects.secrets {
        items.push(serde_yaml::to_value(&**secret)?);
    }
    let mut list = serde_yaml::Mapping::new();
    list.insert("apiVersion".into(), "v1".into());
    list.insert("kind".into(), "List".into());
    list.insert("items".into(), items.into());
    serde_yaml::to_string(&list)
}

impl Objects {
    /// Add one object read from YAML; other kinds are ignored.
    fn add(&mut self, item: serde_json::Value) -> Result<(), Problem> {
        let header = Header::deserialize(&item).unwrap_or_default();
        match self.add_kind(&header, item) {
            Some(read) => read.map_err(|e| header.problem(e)),
            None => {
                header.ignore();
                Ok(())
            }
        }
    }

    /// Add the objects of a JSON list in order, reading a long one on as many threads as there
    /// are cores (up to 4): reading is most of a full render's time at scale.
    fn add_all_json(&mut self, items: &[&RawValue], problems: &mut Vec<Problem>) {
        self.add_read(
            crate::parallel::by_chunks(items, 2000, read_items),
            problems,
        );
    }

    /// Add the objects `read` in parts ([`read_items`]), in order.
    fn add_read(&mut self, read: Vec<(Objects, Vec<Problem>)>, problems: &mut Vec<Problem>) {
        for (objects, more_problems) in read {
            self.services.extend(objects.services);
            self.endpoint_slices.extend(objects.endpoint_slices);
            self.endpoints.extend(objects.endpoints);
            self.namespaces.extend(objects.namespaces);
            self.secrets.extend(objects.secrets);
            problems.extend(more_problems);
        }
    }

    /// Add one object read from JSON, straight into its Kubernetes type; other kinds are
    /// ignored. The whole header is read only when the object is not read, to name it.
    fn add_json(&mut self, item: &str, problems: &mut Vec<Problem>) {
        let found = TypeMeta::of(item);
        let header = Header {
            api_version: found.api_version.unwrap_or_default(),
            kind: found.kind.unwrap_or_default(),
            ..Header::default()
        };
        let read = self.add_kind(&header, &mut serde_json::Deserializer::from_str(item));
        if let Some(Ok(())) = read {
            return;
        }
        let header: Header = match serde_json::from_str(item) {
            Ok(header) => header,
            Err(error) => return problems.push(header.problem(error)),
        };
        match read {
            Some(Err(error)) => problems.push(header.problem(error)),
            _ => header.ignore(),
        }
    }

    /// Add `object`, slimmed, if `header` says it is of a kind read (`None` when not). The kinds
    /// of which a cluster has thousands are read straight into what is kept.
    fn add_kind<'de, D>(
        &mut self,
        header: &Header,
        object: D,
    ) -> Option<Result<(), serde_json::Error>>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        Some(match (header.api_version.as_str(), header.kind.as_str()) {
            ("v1", "Service") => push(&mut self.services, object),
            ("v1", "Endpoints") => push(&mut self.endpoints, object),
            ("discovery.k8s.io/v1", "EndpointSlice") => push(&mut self.endpoint_slices, object),
            ("v1", "Namespace") => {
                Namespace::deserialize(object).map(|n| self.namespaces.push(Arc::new(n.slim())))
            }
            ("v1", "Secret") => {
                Secret::deserialize(object).map(|s| self.secrets.push(Arc::new(s.slim())))
            }
            _ => return None,
        })
    }
}

/// `object`, read as a `K`, onto `objects`.
fn push<'de, K, D>(objects: &mut Vec<Arc<K>>, object: D) -> Result<(), serde_json::Error>
where
    K: Deserialize<'de>,
    D: serde::Deserializer<'de, Error = serde_json::Error>,
{
    objects.push(Arc::new(K::deserialize(object)?));
    Ok(())
}

impl Header {
    /// `Service namespace/name`.
    fn object(&self) -> String {
        let meta = |value: &Option<String>| value.clone().unwrap_or_else(|| "?".into());
        format!(
            "{} {}/{}",
            self.kind,
            meta(&self.metadata.namespace),
            meta(&self.metadata.name)
        )
    }

    fn problem(&self, error: serde_json::Error) -> Problem {
        let kind = if self.kind.is_empty() {
            "object"
        } else {
            &self.kind
        };
        Problem::new(&self.object(), &format!("not a valid {kind}: {error}"))
    }

    fn ignore(&self) {
        let (object, api_version) = (self.object(), &self.api_version);
        tracing::debug!(object = %printable(&object), %api_version, "ignoring an object of another kind");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_streams_and_json() {
        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n\
                    - {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, addressType: IPv4, endpoints: [], metadata: {name: a-x}}\n\
                    - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n";
        let (objects, problems) = parse_snapshot(list).unwrap();
        assert_eq!(
            (
                objects.services.len(),
                objects.endpoint_slices.len(),
                problems.len()
            ),
            (1, 1, 0)
        );

        let stream = "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: a}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"b\"}}\n";
        let (objects, _) = parse_snapshot(stream).unwrap();
        assert_eq!((objects.services.len(), objects.endpoints.len()), (1, 1));
    }

    #[test]
    fn json_of_one_list_one_object_or_several_documents_is_read_whole() {
        let service = |name: &str| {
            format!(
                r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}}}}"#
            )
        };
        // kubectl's order: the items before the kind.
        let list = format!(
            r#"{{"apiVersion": "v1", "items": [{}, {}], "kind": "List", "metadata": {{}}}}"#,
            service("a"),
            service("b")
        );
        let names = |text: &str| {
            let (objects, problems) = parse_snapshot(text).unwrap();
            assert!(problems.is_empty(), "{problems:?}");
            (objects.services.iter())
                .map(|s| s.meta.name.as_deref().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&list), ["a", "b"]);
        assert_eq!(names(&service("c")), ["c"]);
        let stream = format!("{list}\n{}\n{}", service("c"), service("d"));
        assert_eq!(names(&stream), ["a", "b", "c", "d"]);
        assert!(names(r#"{"kind": "List", "items": null}"#).is_empty());
        let twice = r#"{"kind": "List", "items": [], "items": []}"#;
        let (format, error) = parse_snapshot(twice).err().unwrap();
        assert_eq!(format, "JSON");
        assert!(error.contains("duplicate field `items`"), "{error}");
    }

    #[test]
    fn a_long_list_is_read_in_order_with_its_problems() {
        let items: Vec<String> = (0..2500)
            .map(|i| {
                let port = if i == 1700 { r#""eighty""# } else { "80" };
                format!(
                    r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "s{i}", "namespace": "ns"}}, "spec": {{"ports": [{{"port": {port}}}]}}}}"#
                )
            })
            .collect();
        let list = format!(r#"{{"kind": "List", "items": [{}]}}"#, items.join(","));
        let (objects, problems) = parse_snapshot(&list).unwrap();
        let names: Vec<String> = objects
            .services
            .iter()
            .map(|s| s.meta.name.as_deref().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..2500)
            .filter(|&i| i != 1700)
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(names, expected);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object, "Service ns/s1700");
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(r#"{"a": "[[{\"[", "b": [[1]], "c": "\\"}"#), 3);
    }

    #[test]
    fn a_malformed_object_is_a_problem_naming_it_and_the_rest_is_read() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: ns}\nspec: {ports: [{port: eighty}]}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: good}\n";
        let (objects, problems) = parse_snapshot(yaml).unwrap();
        assert_eq!(objects.services.len(), 1);
        assert_eq!(problems[0].object, "Service ns/bad");
    }

    #[test]
    fn broken_yaml_is_an_error() {
        assert!(parse_snapshot("kind: [unclosed").is_err());
    }

    #[test]
    fn json_is_read_as_json_whatever_kubectl_puts_in_its_strings() {
        let long_key = "k".repeat(2000);
        let json = format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\
             {{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {{\"name\": \"a\", \
             \"annotations\": {{\"note\": \"del \u{7f} c1 \u{85} nonchar \u{fffe}\", \"{long_key}\": \"x\"}}}}}},\
             {{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {{\"name\": \"bad\"}}, \"spec\": {{\"ports\": 7}}}},\
             {{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"c\"}}}}]}}"
        );
        let (objects, problems) = parse_snapshot(&json).unwrap();
        assert_eq!(objects.services.len(), 1);
        let annotations = &objects.services[0].meta.annotations;
        assert_eq!(
            annotations.get("note"),
            Some("del \u{7f} c1 \u{85} nonchar \u{fffe}")
        );
        assert_eq!(annotations.get(&long_key), Some("x"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object, "Service ?/bad");
        let (format, _) = parse_snapshot("{\"kind\": ").unwrap_err();
        assert_eq!(format, "JSON");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_in_both_formats() {
        let deep = "[".repeat(180_000) + &"]".repeat(180_000);
        let started = std::time::Instant::now();
        let (format, message) = parse_snapshot(&deep).unwrap_err();
        assert_eq!(format, "JSON");
        assert!(message.contains("deeper than 100"), "{message}");
        let yaml = format!("items: {deep}\n");
        let (format, _) = parse_snapshot(&yaml).unwrap_err();
        assert_eq!(format, "YAML");
        let block = format!("a:\n{}", "- ".repeat(1000) + "x\n");
        assert!(
            parse_snapshot(&block).is_err(),
            "block nesting hits the parser's own limit"
        );
        // A guard against the parser's quadratic time, not a speed target.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn deep_nesting_inside_a_json_object_costs_that_object_at_most() {
        let deep = |n| "[".repeat(n) + &"]".repeat(n);
        let service = |name: &str, rest: &str| {
            format!(
                r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}", "namespace": "ns"{rest}}}}}"#
            )
        };
        let managed = format!(r#", "managedFields": [{{"fieldsV1": {}}}]"#, deep(150));
        let items = [
            // A field not read is skipped without recursion, however deep: a Service's managed
            // fields too, which are not kept.
            service("unknown", &format!(r#", "x": {}"#, deep(180_000))),
            service("managed", &managed),
            // One read as a free-form value hits the parser's nesting limit: that object only.
            format!(
                r#"{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "free-form"{managed}}}}}"#
            ),
            service("plain", ""),
        ];
        let list = format!(r#"{{"kind": "List", "items": [{}]}}"#, items.join(","));
        let (objects, problems) = parse_snapshot(&list).unwrap();
        let names: Vec<_> = (objects.services.iter())
            .map(|s| s.meta.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["unknown", "managed", "plain"]);
        assert!(objects.namespaces.is_empty());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].object, "Namespace ?/free-form");
        assert!(
            problems[0].reason.contains("recursion limit"),
            "{problems:?}"
        );
    }

    #[test]
    fn brackets_in_plain_and_block_scalars_are_not_nesting() {
        let brackets = "[".repeat(200);
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n    \
             plain: x{brackets}\n    quoted: '{brackets}'\n    block: |\n      {brackets}\n      \"\n\
             # {brackets}\nspec: {{ports: [{{name: \"]]]\", port: 80}}]}}\n"
        );
        let (objects, problems) = parse_snapshot(&yaml).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let annotations = &objects.services[0].meta.annotations;
        assert_eq!(
            annotations.get("block"),
            Some(format!("{brackets}\n\"\n").as_str())
        );
        assert_eq!(yaml_flow_depth(&yaml), 3);
    }
}
