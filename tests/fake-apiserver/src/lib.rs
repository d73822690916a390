//! A fake Kubernetes API server for tests.
//!
//! No kube-apiserver package exists here, so this speaks the part of the real protocol that
//! wasmconfd uses, over real HTTP (or HTTPS with client certificates), to the real kube client:
//!
//! - `GET` lists of services, endpoints, endpointslices and secrets, cluster-wide or per
//!   namespace, with `labelSelector` (and `fieldSelector=type=...` for secrets), answered with
//!   the collection's `resourceVersion`;
//! - `?watch=true&resourceVersion=N` streams newline-delimited `ADDED`, `MODIFIED`, `DELETED`
//!   events after N, `BOOKMARK`s when asked for, and ends at `timeoutSeconds`;
//! - a watch from before the retained history gets an `ERROR` event with a 410 Gone status,
//!   as the real server does after compaction.
//!
//! A test changes objects ([`FakeApi::apply`], [`FakeApi::delete`]), forgets history
//! ([`FakeApi::compact`]), drops watch connections, stops and restarts the server, or makes it
//! fail ([`Fault`]). It counts list and watch requests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// A way for the server to misbehave, for every request from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Answer 500 with a Status object.
    Status500,
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Accept the request and never answer.
    Hang,
    /// Answer 403 with a Status object, as a restarted API server does while its authorizer
    /// warms up.
    Forbidden,
}

/// The resources the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Endpoints,
    EndpointSlice,
    /// Cluster-scoped: kept under namespace `default`, listed only at `/api/v1/namespaces`.
    Namespace,
    Secret,
}

impl Kind {
    fn of(object: &Value) -> Option<Kind> {
        match (object["apiVersion"].as_str()?, object["kind"].as_str()?) {
            ("v1", "Service") => Some(Kind::Service),
            ("v1", "Endpoints") => Some(Kind::Endpoints),
            ("discovery.k8s.io/v1", "EndpointSlice") => Some(Kind::EndpointSlice),
            ("v1", "Namespace") => Some(Kind::Namespace),
            ("v1", "Secret") => Some(Kind::Secret),
            _ => None,
        }
    }

    /// `/api/v1/services`, `/api/v1/namespaces/NS/endpoints`, ... -> (kind, namespace).
    fn route(path: &str) -> Option<(Kind, Option<String>)> {
        let rest = path
            .strip_prefix("/api/v1/")
            .or_else(|| path.strip_prefix("/apis/discovery.k8s.io/v1/"))?;
        let (namespace, resource) = match rest.strip_prefix("namespaces/") {
            Some(rest) => {
                let (ns, resource) = rest.split_once('/')?;
                (Some(ns.to_string()), resource)
            }
            None => (None, rest),
        };
        let kind = match (path.starts_with("/apis/"), resource) {
            (false, "services") => Kind::Service,
            (false, "endpoints") => Kind::Endpoints,
            (true, "endpointslices") => Kind::EndpointSlice,
            (false, "namespaces") if namespace.is_none() => Kind::Namespace,
            (false, "secrets") => Kind::Secret,
            _ => return None,
        };
        Some((kind, namespace))
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
        }
    }
}

struct Event {
    resource_version: u64,
    kind: Kind,
    kind_of_event: &'static str,
    object: Value,
}

struct State {
    resource_version: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Event>,
    /// Watches from before this resource version get 410 Gone.
    oldest: u64,
    fault: Fault,
    /// When set, only requests for this kind get the fault.
    fault_only: Option<Kind>,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    token: Option<String>,
    lists: usize,
    watches: usize,
    /// Bodies of `events.k8s.io/v1` Events created (POST) and updated (PATCH), in order.
    events: Vec<(String, Value)>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change, to wake watches.
    changed: watch::Sender<u64>,
    /// Bumped to close every connection.
    generation: watch::Sender<u64>,
    bookmark_every: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Certificates for a client of an HTTPS [`FakeApi`].
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A client certificate the server accepts, and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running fake API server. Dropping it stops it.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    accept: Option<tokio::task::JoinHandle<()>>,
    client_files: Option<(tempfile::TempDir, ClientFiles)>,
}

impl FakeApi {
    /// Start on a free loopback port, over plain HTTP.
    pub fn start() -> FakeApi {
        Self::start_with(None, None)
    }

    /// Start over HTTPS, requiring a client certificate signed by its own throwaway CA.
    pub fn start_tls() -> FakeApi {
        let dir = tempfile::tempdir().unwrap();
        let (server, files) = throwaway_pki(&dir);
        Self::start_with(Some(Arc::new(server)), Some((dir, files)))
    }

    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        client_files: Option<(tempfile::TempDir, ClientFiles)>,
    ) -> FakeApi {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                resource_version: 100,
                objects: BTreeMap::new(),
                history: Vec::new(),
                oldest: 0,
                fault: Fault::None,
                fault_only: None,
                token: None,
                lists: 0,
                watches: 0,
                events: Vec::new(),
            }),
            changed: watch::channel(0).0,
            generation: watch::channel(0).0,
            bookmark_every: Duration::from_millis(500),
            tls,
        });
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = Some(runtime.spawn(accept(listener, shared.clone())));
        FakeApi {
            shared,
            addr,
            runtime,
            accept,
            client_files,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The client certificate files of an HTTPS server.
    pub fn client_files(&self) -> Option<&ClientFiles> {
        self.client_files.as_ref().map(|(_, files)| files)
    }

    /// Add an object, or replace the one with its kind, namespace and name.
    pub fn apply(&self, mut object: Value) {
        let kind =
            Kind::of(&object).expect("a Service, Endpoints, EndpointSlice, Namespace or Secret");
        let key = (kind, namespace(&object), name(&object));
        let mut state = self.shared.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{:?}-{}-{}", key.0, key.1, key.2));
        }
        let kind_of_event = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.objects.insert(key, object.clone());
        state.history.push(Event {
            resource_version: rv,
            kind,
            kind_of_event,
            object,
        });
        drop(state);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Add every object of a YAML-ish JSON list (`{"items": [...]}`) or a single object.
    pub fn apply_all(&self, objects: Value) {
        match objects.get("items").and_then(Value::as_array) {
            Some(items) => items.iter().cloned().for_each(|o| self.apply(o)),
            None => self.apply(objects),
        }
    }

    /// Delete an object; `false` if there was none.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut state = self.shared.state.lock().unwrap();
        let Some(mut object) =
            state
                .objects
                .remove(&(kind, namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.history.push(Event {
            resource_version: rv,
            kind,
            kind_of_event: "DELETED",
            object,
        });
        drop(state);
        self.shared.changed.send_modify(|n| *n += 1);
        true
    }

    /// Forget the event history, as etcd compaction does: a watch resuming from any resource
    /// version seen so far gets 410 Gone and must list again.
    pub fn compact(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.history.clear();
        state.oldest = state.resource_version + 1;
    }

    /// Move the resource version far ahead and forget the history, as an API server restarted
    /// on a compacted etcd looks to a client: every watch resuming from before gets 410 Gone.
    pub fn jump_ahead(&self) {
        self.shared.state.lock().unwrap().resource_version += 1000;
        self.compact();
    }

    /// Close every open connection (watches included), as a restarting API server does.
    pub fn drop_connections(&self) {
        self.shared.generation.send_modify(|n| *n += 1);
    }

    /// Stop listening and close every connection: the API is down.
    pub fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // Once it has stopped, no connection is accepted after the ones closed below.
            let _ = self.runtime.block_on(accept);
        }
        self.drop_connections();
    }

    /// Listen again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        // The stopped listener closes once its aborted task is dropped, which may take a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match self.runtime.block_on(TcpListener::bind(self.addr)) {
                Ok(listener) => break listener,
                Err(error) if std::time::Instant::now() > deadline => {
                    panic!("cannot listen on {} again: {error}", self.addr)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        self.accept = Some(self.runtime.spawn(accept(listener, self.shared.clone())));
    }

    /// Misbehave from now on (or stop misbehaving with [`Fault::None`]).
    pub fn set_fault(&self, fault: Fault) {
        let mut state = self.shared.state.lock().unwrap();
        (state.fault, state.fault_only) = (fault, None);
    }

    /// Misbehave from now on, only for requests about `kind`.
    pub fn set_fault_on(&self, kind: Kind, fault: Fault) {
        let mut state = self.shared.state.lock().unwrap();
        (state.fault, state.fault_only) = (fault, Some(kind));
    }

    /// Answer 401 to requests without `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: &str) {
        self.shared.state.lock().unwrap().token = Some(token.to_string());
    }

    /// How many list requests were answered.
    pub fn lists(&self) -> usize {
        self.shared.state.lock().unwrap().lists
    }

    /// How many watch requests were started.
    /// The Events posted (`("POST", event)`) and patched (`("PATCH", event)`), in order.
    pub fn events(&self) -> Vec<(String, Value)> {
        self.shared.state.lock().unwrap().events.clone()
    }

    pub fn watches(&self) -> usize {
        self.shared.state.lock().unwrap().watches
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn namespace(object: &Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string()
}

fn name(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        // Subscribed before the connection's task runs: a cut made after the connection was
        // accepted closes it, however late the task starts.
        let mut generation = shared.generation.subscribe();
        tokio::spawn(async move {
            let tls = shared.tls.clone();
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(request, shared).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let serve = async move {
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(config) => {
                        if let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = generation.changed() => {}
                _ = serve => {}
            }
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn handle(request: Request<hyper::body::Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let is_events =
        path.starts_with("/apis/events.k8s.io/v1/namespaces/") && path.contains("/events");
    if is_events
        && matches!(
            *request.method(),
            hyper::Method::POST | hyper::Method::PATCH
        )
    {
        let method = request.method().to_string();
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        let Ok(Ok(event)) = body.map(|b| serde_json::from_slice::<Value>(&b)) else {
            return full(
                StatusCode::BAD_REQUEST,
                status(400, "BadRequest", "not JSON").to_string(),
            );
        };
        shared
            .state
            .lock()
            .unwrap()
            .events
            .push((method.clone(), event.clone()));
        let code = if method == "POST" {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return full(code, event.to_string());
    }
    let route = Kind::route(request.uri().path());
    let (fault, token) = {
        let state = shared.state.lock().unwrap();
        let applies = state
            .fault_only
            .is_none_or(|only| route.as_ref().is_some_and(|(kind, _)| *kind == only));
        let fault = if applies { state.fault } else { Fault::None };
        (fault, state.token.clone())
    };
    if let Some(token) = token {
        let sent = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {token}").as_str()) {
            let body = status(401, "Unauthorized", "Unauthorized");
            return full(StatusCode::UNAUTHORIZED, body.to_string());
        }
    }
    match fault {
        Fault::None => {}
        Fault::Status500 => {
            let body = status(500, "InternalError", "the fake API server was told to fail");
            return full(StatusCode::INTERNAL_SERVER_ERROR, body.to_string());
        }
        Fault::Garbage => return full(StatusCode::OK, "this is not JSON {{{"),
        Fault::Hang => std::future::pending().await,
        Fault::Forbidden => {
            let body = status(403, "Forbidden", "the fake API server was told to forbid");
            return full(StatusCode::FORBIDDEN, body.to_string());
        }
    }
    let Some((kind, namespace)) = route else {
        let body = status(
            404,
            "NotFound",
            &format!("the server could not find {}", request.uri().path()),
        );
        return full(StatusCode::NOT_FOUND, body.to_string());
    };
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let filter = Filter {
        kind,
        namespace,
        selector: query.get("labelSelector").cloned().unwrap_or_default(),
        secret_type: query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("type="))
            .map(str::to_string),
    };
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        let from = query.get("resourceVersion").and_then(|v| v.parse().ok());
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        return watch_response(
            shared,
            filter,
            from,
            bookmarks,
            Duration::from_secs(timeout),
        );
    }

    let mut state = shared.state.lock().unwrap();
    state.lists += 1;
    let items: Vec<_> = state
        .objects
        .iter()
        .filter(|((k, _, _), o)| filter.matches(*k, o))
        .map(|(_, o)| o.clone())
        .collect();
    let list = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": state.resource_version.to_string()},
        "items": items,
    });
    full(StatusCode::OK, list.to_string())
}

/// Which objects a request is about.
struct Filter {
    kind: Kind,
    namespace: Option<String>,
    selector: String,
    /// `fieldSelector=type=...`, the one field selector the server knows (Secrets by type).
    secret_type: Option<String>,
}

impl Filter {
    fn matches(&self, kind: Kind, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        kind == self.kind
            && self
                .secret_type
                .as_ref()
                .is_none_or(|t| object["type"].as_str() == Some(t))
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == namespace(object))
            && self
                .selector
                .split(',')
                .filter(|s| !s.is_empty())
                .all(|term| {
                    if let Some((key, value)) = term.split_once("!=") {
                        labels[key].as_str() != Some(value)
                    } else if let Some((key, value)) = term.split_once('=') {
                        labels[key].as_str() == Some(value.trim_start_matches('='))
                    } else {
                        !labels[term].is_null()
                    }
                })
    }
}

fn watch_response(
    shared: Arc<Shared>,
    filter: Filter,
    from: Option<u64>,
    bookmarks: bool,
    timeout: Duration,
) -> Response<Body> {
    let (sender, receiver) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let send = |sender: &mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
                kind_of_event: &str,
                object: &Value| {
        let line = json!({"type": kind_of_event, "object": object}).to_string() + "\n";
        sender.try_send(Ok(Frame::data(Bytes::from(line)))).is_ok()
    };
    let mut state = shared.state.lock().unwrap();
    state.watches += 1;
    let resumed = from.filter(|&rv| rv > 0);
    if let Some(rv) = resumed.filter(|&rv| rv < state.oldest) {
        let gone = status(
            410,
            "Expired",
            &format!("too old resource version: {rv} ({})", state.oldest),
        );
        send(&sender, "ERROR", &gone);
    } else {
        // Without a resource version (or with 0), a watch starts with every current object.
        let mut sent = resumed.unwrap_or_else(|| {
            for ((kind, _, _), object) in &state.objects {
                if filter.matches(*kind, object) {
                    send(&sender, "ADDED", object);
                }
            }
            state.resource_version
        });
        let mut changed = shared.changed.subscribe();
        let mut generation = shared.generation.subscribe();
        let shared = shared.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let current = {
                    let state = shared.state.lock().unwrap();
                    for event in state.history.iter().filter(|e| e.resource_version > sent) {
                        if filter.matches(event.kind, &event.object)
                            && !send(&sender, event.kind_of_event, &event.object)
                        {
                            return;
                        }
                    }
                    state.resource_version
                };
                sent = sent.max(current);
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = generation.changed() => return,
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tokio::time::sleep(shared.bookmark_every), if bookmarks => {
                        let bookmark = json!({"kind": filter.kind.name(), "apiVersion": filter.kind.api_version(),
                                              "metadata": {"resourceVersion": sent.to_string()}});
                        if !send(&sender, "BOOKMARK", &bookmark) {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(state);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap()
}

fn percent_decode(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, written
/// into `dir` for the client; the server's TLS configuration requires that client certificate.
fn throwaway_pki(dir: &tempfile::TempDir) -> (rustls::ServerConfig, ClientFiles) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake-apiserver CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let server = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmconfd");
    let client = client_params.signed_by(&client_key, &issuer).unwrap();

    let files = ClientFiles {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("client.pem"),
        key: dir.path().join("client-key.pem"),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, client.pem()).unwrap();
    std::fs::write(&files.key, client_key.serialize_pem()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    (config, files)
}

/// A certificate authority for tests, and the `kubernetes.io/tls` Secrets it signs, as
/// cert-manager leaves them in a cluster.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate, PEM, for clients to trust.
    pub pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wasmconfd test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` with serial `serial`, valid from a day ago until `days` from
    /// now (negative: expired), and its key: (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str], serial: u64, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.serial_number = Some(serial.into());
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let span = day * days.unsigned_abs() as u32;
        let (from, until) = if days >= 0 {
            (now - day, now + span)
        } else {
            (now - span - day, now - span)
        };
        (params.not_before, params.not_after) = (from.into(), until.into());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A `kubernetes.io/tls` Secret `namespace/name` holding a certificate of [`TestCa::issue`].
    pub fn secret(&self, namespace: &str, name: &str, names: &[&str], serial: u64) -> Value {
        let (cert, key) = self.issue(names, serial, 90);
        tls_secret(namespace, name, &cert, &key)
    }
}

/// A `kubernetes.io/tls` Secret with `cert` and `key` (PEM).
pub fn tls_secret(namespace: &str, name: &str, cert: &str, key: &str) -> Value {
    use base64::Engine as _;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"tls.crt": encode(cert), "tls.key": encode(key)}})
}
