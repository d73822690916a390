//! Kubernetes objects -> the validated model guests see. Pure functions, no I/O.
//!
//! A service is ours when it (or its legacy Endpoints object, python-confd style) carries a
//! proto annotation. Everything in the annotations is checked here, before any guest sees it:
//! an object that fails is skipped with a [`Problem`] that names it, and the rest renders.

use crate::bindings::{Endpoint, EndpointPort, Protocol, Service, ServicePort};
use crate::in_step::InStep;
use crate::source::compact::{self, Meta};
use crate::source::{Objects, Problem};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// Annotation keys, each with the bare key python-confd used as a fallback.
pub const DOMAIN: [&str; 2] = ["wasmconfd.io/domain", "domain"];
pub const PROTO: [&str; 2] = ["wasmconfd.io/proto", "proto"];
pub const PORT: &str = "wasmconfd.io/port";
pub const LISTEN_PORT: &str = "wasmconfd.io/listen-port";
/// A path prefix: services may share a domain when their paths differ.
pub const PATH: &str = "wasmconfd.io/path";
/// The TLS Secret of a service (see [`crate::tls`]).
pub const TLS_SECRET: &str = crate::tls::ANNOTATION;
/// `true`: plain HTTP requests for the service's domains are redirected to HTTPS.
pub const SSL_REDIRECT: &str = "wasmconfd.io/ssl-redirect";
/// The prefix of wasmconfd's own annotations, and those it reads.
const PREFIX: &str = "wasmconfd.io/";
const KNOWN: [&str; 7] = [
    DOMAIN[0],
    PROTO[0],
    PORT,
    LISTEN_PORT,
    PATH,
    TLS_SECRET,
    SSL_REDIRECT,
];

/// Why annotation `key` (with wasmconfd's prefix) is ignored, with the known key it most
/// likely means.
fn unknown_annotation(key: &str) -> String {
    let distance = |known: &str| edit_distance(key, known);
    let closest = KNOWN.iter().min_by_key(|known| distance(known));
    let hint = match closest {
        Some(known) if distance(known) <= 4 => format!(" (did you mean {known}?)"),
        _ => String::new(),
    };
    format!(
        "annotation {key} is not one wasmconfd reads{hint}: ignored; it reads {}",
        KNOWN.join(", ")
    )
}

/// The Levenshtein distance between `a` and `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the model lets through, beyond what is always checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The ports `wasmconfd.io/listen-port` may name. Below 1024 are the ports a proxy node's
    /// own frontends (80, 443) and system services (22) use, so they are not handed out.
    pub listen_ports: RangeInclusive<u16>,
    /// Accept endpoint addresses in 127.0.0.0/8 and ::1. Off by default: such an endpoint
    /// would send a team's domain to a service on the proxy node itself (Kubernetes refuses
    /// them in Endpoints for the same reason). For development and tests on one machine.
    pub allow_loopback: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            listen_ports: 1024..=65535,
            allow_loopback: false,
        }
    }
}

/// Labels of each namespace, by name, from the Namespace objects read.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// The labels of every Namespace object in `objects`.
pub fn namespace_labels(objects: &Objects) -> NamespaceLabels {
    objects
        .namespaces
        .iter()
        .map(|ns| {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            let name = ns.metadata.name.clone().unwrap_or_default();
            (name, labels.into_iter().collect())
        })
        .collect()
}

/// The services of `objects` that carry a valid proto annotation, sorted by namespace and name,
/// and the problems found with the others (or with parts of them, which were left out).
pub fn build(objects: &Objects, rules: &Rules) -> (Vec<Arc<Service>>, Vec<Problem>) {
    Model::default().build(objects, rules)
}

/// The model kept from one render to the next: an object whose `Arc` is the one it was built
/// from last time is not converted again. The watch caches put every changed object in a new
/// `Arc`, and an unchanged one stays in its own, so one endpoint change converts one service.
#[derive(Default)]
pub struct Model {
    rules: Option<Rules>,
    /// In the order of the last build's candidates, by the address of each one's first object.
    built: Vec<(usize, Option<Built>)>,
    conflicts: Option<Conflicts>,
}

/// The last resolution of domain conflicts: which of the services given were kept, and the
/// problems of the others. It holds while every service claims what it claimed then.
struct Conflicts {
    given: Vec<Arc<Service>>,
    kept: Vec<bool>,
    problems: Vec<Problem>,
}

impl Conflicts {
    fn holds_for(&self, services: &[Arc<Service>]) -> bool {
        self.given.len() == services.len()
            && (self.given.iter().zip(services))
                .all(|(a, b)| Arc::ptr_eq(a, b) || same_claims(a, b))
    }
}

/// Whether `a` and `b` are the same service claiming the same domains, as old as each other.
fn same_claims(a: &Service, b: &Service) -> bool {
    (
        &a.namespace,
        &a.name,
        &a.proto,
        &a.domains,
        a.creation_time,
        path_of(a),
    ) == (
        &b.namespace,
        &b.name,
        &b.proto,
        &b.domains,
        b.creation_time,
        path_of(b),
    )
}

/// The service's path annotation, or "".
fn path_of(service: &Service) -> &str {
    (service.annotations.iter())
        .find(|(k, _)| k == PATH)
        .map_or("", |(_, v)| v.as_str())
}

/// What one candidate became, and the objects it was made of.
struct Built {
    sources: Sources,
    service: Result<Option<Arc<Service>>, String>,
    /// Parts of it left out.
    problems: Vec<Problem>,
}

impl Model {
    /// [`build`], converting only the objects that changed since the last call.
    pub fn build(&mut self, objects: &Objects, rules: &Rules) -> (Vec<Arc<Service>>, Vec<Problem>) {
        if self.rules.as_ref() != Some(rules) {
            self.built.clear();
            self.rules = Some(rules.clone());
        }
        // The objects come sorted by namespace and name each time, so the last build's
        // candidates are found in step.
        let mut previous = InStep::new(std::mem::take(&mut self.built));
        let candidates = candidates(objects);
        let mut built: Vec<Option<Built>> = (candidates.iter())
            .map(|candidate| {
                let last = previous.take(candidate.key())?;
                last.sources.same(candidate).then_some(last)
            })
            .collect();
        convert_missing(&candidates, &mut built, rules);
        self.built.reserve(candidates.len());
        let mut problems = Vec::new();
        let mut services: Vec<Arc<Service>> = Vec::with_capacity(candidates.len());
        for (candidate, built) in candidates.iter().zip(built) {
            let built = built.expect("every candidate is converted");
            problems.extend(built.problems.iter().cloned());
            match &built.service {
                Ok(Some(service)) => services.push(service.clone()),
                Ok(None) => {}
                Err(reason) => problems.push(Problem::new(&candidate.id(), reason)),
            }
            self.built.push((candidate.key(), Some(built)));
        }
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let conflicts = match self.conflicts.take() {
            Some(last) if last.holds_for(&services) => Conflicts {
                given: services,
                ..last
            },
            _ => {
                let mut problems = Vec::new();
                let kept = resolve_domain_conflicts(&services, &mut problems);
                Conflicts {
                    given: services,
                    kept,
                    problems,
                }
            }
        };
        problems.extend(conflicts.problems.iter().cloned());
        let services = (conflicts.given.iter().zip(&conflicts.kept))
            .filter(|(_, kept)| **kept)
            .map(|(service, _)| service.clone())
            .collect();
        self.conflicts = Some(conflicts);
        (services, problems)
    }
}

/// Convert the candidates that have nothing `built`: on as many threads as there are cores (up
/// to 4) when there are many, as on a first render.
fn convert_missing(candidates: &[Candidate], built: &mut [Option<Built>], rules: &Rules) {
    let missing: Vec<usize> = (0..built.len()).filter(|&i| built[i].is_none()).collect();
    let converted = crate::parallel::by_chunks(&missing, 2000, |missing| {
        (missing.iter())
            .map(|&i| candidates[i].built(rules))
            .collect::<Vec<_>>()
    });
    for (i, made) in missing.iter().zip(converted.into_iter().flatten()) {
        built[*i] = Some(made);
    }
}

/// The objects a candidate is made of. Holding them keeps their addresses from being reused,
/// so the same addresses mean the same objects.
#[derive(Clone)]
struct Sources {
    service: Option<Arc<compact::Service>>,
    endpoints: Option<Arc<compact::Endpoints>>,
    slices: Vec<Arc<compact::EndpointSlice>>,
}

impl Sources {
    /// Whether `candidate` is made of these very objects.
    fn same(&self, candidate: &Candidate) -> bool {
        fn same_object<T>(a: &Option<Arc<T>>, b: Option<&Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
        }
        same_object(&self.service, candidate.service)
            && same_object(&self.endpoints, candidate.endpoints)
            && self.slices.len() == candidate.slices.len()
            && (self.slices.iter().zip(&candidate.slices)).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// Every Service with what backs it, and every legacy Endpoints object without a Service.
fn candidates(objects: &Objects) -> Vec<Candidate<'_>> {
    let mut slices: foldhash::HashMap<(&str, &str), Vec<&Arc<compact::EndpointSlice>>> =
        foldhash::HashMap::with_capacity_and_hasher(objects.services.len(), Default::default());
    for slice in &objects.endpoint_slices {
        if let Some(service) = slice.meta.labels.get(SERVICE_NAME_LABEL) {
            slices
                .entry((namespace(&slice.meta), service))
                .or_default()
                .push(slice);
        }
    }
    let mut legacy: foldhash::HashMap<(&str, &str), &Arc<compact::Endpoints>> = objects
        .endpoints
        .iter()
        .map(|e| ((namespace(&e.meta), name(&e.meta)), e))
        .collect();

    let mut candidates = Vec::with_capacity(objects.services.len());
    for service in &objects.services {
        let key = (namespace(&service.meta), name(&service.meta));
        candidates.push(Candidate {
            kind: "Service",
            meta: &service.meta,
            service: Some(service),
            endpoints: legacy.remove(&key),
            slices: slices.remove(&key).unwrap_or_default(),
        });
    }
    // The legacy Endpoints objects left have no Service.
    for endpoints in &objects.endpoints {
        let key = (namespace(&endpoints.meta), name(&endpoints.meta));
        if legacy.contains_key(&key) {
            candidates.push(Candidate {
                kind: "Endpoints",
                meta: &endpoints.meta,
                service: None,
                endpoints: Some(endpoints),
                slices: Vec::new(),
            });
        }
    }
    candidates
}

struct Candidate<'a> {
    kind: &'static str,
    meta: &'a Meta,
    /// The Service, unless this is a legacy Endpoints object without one.
    service: Option<&'a Arc<compact::Service>>,
    /// The legacy Endpoints object of the same name. Its endpoints count when the Service has
    /// no EndpointSlice (they list the same addresses, so never both); python-confd annotated
    /// these objects, so their annotations count where the Service has none.
    endpoints: Option<&'a Arc<compact::Endpoints>>,
    slices: Vec<&'a Arc<compact::EndpointSlice>>,
}

impl Candidate<'_> {
    /// The address of the Service, or of the Endpoints object of a candidate without one.
    fn key(&self) -> usize {
        match (self.service, self.endpoints) {
            (Some(service), _) => Arc::as_ptr(service) as usize,
            (None, Some(endpoints)) => Arc::as_ptr(endpoints) as usize,
            (None, None) => unreachable!("a candidate has a Service or an Endpoints object"),
        }
    }

    /// What this candidate becomes.
    fn built(&self, rules: &Rules) -> Built {
        let mut problems = Vec::new();
        let service = self.to_service(rules, &mut problems);
        Built {
            sources: self.sources(),
            service: service.map(|s| s.map(Arc::new)),
            problems,
        }
    }

    fn sources(&self) -> Sources {
        Sources {
            service: self.service.cloned(),
            endpoints: self.endpoints.cloned(),
            slices: self.slices.iter().map(|&s| s.clone()).collect(),
        }
    }

    fn object(&self) -> Object<'_> {
        Object {
            kind: self.kind,
            meta: self.meta,
        }
    }

    fn id(&self) -> String {
        self.object().to_string()
    }

    /// The annotations, sorted by key: the object's own, then the legacy Endpoints' for keys it
    /// lacks (never kubectl's last-applied copy, which is not kept).
    fn annotations(&self) -> Vec<(String, String)> {
        let owned = |(k, v): (&str, &str)| (k.to_string(), v.to_string());
        let own = &self.meta.annotations;
        let mut all: Vec<_> = own.iter().map(owned).collect();
        if let Some(extra) = self.service.and(self.endpoints).map(|e| &e.meta) {
            let lacking = extra
                .annotations
                .iter()
                .filter(|(k, _)| own.get(k).is_none());
            all.extend(lacking.map(owned));
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        all
    }

    /// `Ok(None)` for an object that is not ours (no proto annotation). Invalid ports and
    /// endpoints are left out, each with a problem in `problems`.
    fn to_service(
        &self,
        rules: &Rules,
        problems: &mut Vec<Problem>,
    ) -> Result<Option<Service>, String> {
        let annotations = self.annotations();
        let annotation = |key: &str| {
            let found = annotations.binary_search_by(|(k, _)| k.as_str().cmp(key));
            found.ok().map(|i| &annotations[i].1)
        };
        let get = |keys: &[&'static str]| keys.iter().find_map(|k| annotation(k).map(|v| (*k, v)));
        let keys = || annotations.iter().map(|(k, _)| k);
        let ours = keys().find(|k| k.starts_with(PREFIX));
        let Some((proto_key, proto)) = get(&PROTO) else {
            let bare_domain = get(&[DOMAIN[1]]).map(|(key, _)| key);
            if let Some(key) = ours.map(String::as_str).or(bare_domain) {
                return Err(format!(
                    "has {key} but no {} annotation, so it is not routed; add one (for example `http`)",
                    PROTO[0]
                ));
            }
            return Ok(None);
        };
        for key in keys().filter(|k| k.starts_with(PREFIX)) {
            if !KNOWN.contains(&key.as_str()) {
                problems.push(self.object().problem(&unknown_annotation(key)));
            }
        }
        check_proto(proto).map_err(|e| format!("annotation {proto_key}: {e}"))?;
        check_name(namespace(self.meta)).map_err(|e| format!("namespace: {e}"))?;
        check_name(name(self.meta)).map_err(|e| format!("name: {e}"))?;
        let domains = match get(&DOMAIN) {
            Some((key, value)) => {
                parse_domains(value).map_err(|e| format!("annotation {key}: {e}"))?
            }
            None => Vec::new(),
        };
        if let Some(path) = annotation(PATH) {
            check_path(path).map_err(|e| format!("annotation {PATH}: {e}"))?;
        }
        let listen_port = annotation(LISTEN_PORT)
            .map(|v| {
                parse_listen_port(v, &rules.listen_ports)
                    .map_err(|e| format!("annotation {LISTEN_PORT}: {e}"))
            })
            .transpose()?;

        let mut endpoints = self.endpoints(rules, problems);
        let (ports, port) = self.ports(annotation(PORT), proto, &mut endpoints, problems)?;
        let labels = self.meta.labels.iter();
        Ok(Some(Service {
            namespace: namespace(self.meta).to_string(),
            name: name(self.meta).to_string(),
            domains,
            proto: proto.clone(),
            ports,
            port,
            listen_port,
            endpoints,
            annotations,
            labels: labels
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            creation_time: self.meta.created.as_ref().map(|t| t.0.as_second()),
        }))
    }

    /// The service's ports, and the one traffic is routed to (named or numbered by `wanted`,
    /// the port annotation), which each endpoint's `port` is set to.
    fn ports(
        &self,
        wanted: Option<&String>,
        proto: &str,
        endpoints: &mut [Endpoint],
        problems: &mut Vec<Problem>,
    ) -> Result<(Vec<ServicePort>, Option<String>), String> {
        let ports = match self.service {
            Some(service) => service_ports(service, self.object(), problems),
            None => ports_from_endpoints(endpoints),
        };
        if ports.is_empty() && self.service.is_some() {
            return Err("declares no ports, so there is nothing to send traffic to".into());
        }
        let port = match wanted {
            Some(wanted) => Some(select_port(&ports, wanted)?),
            None => default_port(&ports, proto),
        };
        if let Some(port) = &port {
            for endpoint in endpoints {
                let routed = endpoint.ports.iter().find(|p| &p.name == port);
                endpoint.port = routed.map(|p| p.number);
            }
        }
        Ok((ports, port))
    }

    /// Every valid endpoint, one per address (ports merged, ready if ready anywhere), sorted by
    /// address. An invalid endpoint or port is left out with a problem naming its object.
    fn endpoints(&self, rules: &Rules, problems: &mut Vec<Problem>) -> Vec<Endpoint> {
        let found = if self.slices.is_empty() {
            legacy_endpoints(self.endpoints.map(Arc::as_ref), problems)
        } else {
            slice_endpoints(&self.slices, problems)
        };
        let mut endpoints = Vec::with_capacity(found.len());
        for (object, endpoint) in found {
            match check_endpoint(endpoint, rules) {
                Ok(endpoint) => endpoints.push(endpoint),
                Err(reason) => problems.push(object.problem(&reason)),
            }
        }
        // One endpoint per address, sorted by it: the first seen, with what the others add.
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));
        endpoints.dedup_by(|later, seen| {
            if later.address != seen.address {
                return false;
            }
            seen.ready |= later.ready;
            seen.serving |= later.serving;
            seen.terminating &= later.terminating;
            for port in std::mem::take(&mut later.ports) {
                if !seen.ports.contains(&port) {
                    seen.ports.push(port);
                }
            }
            true
        });
        endpoints
    }
}

/// Every endpoint address of `slices` (but FQDN ones), unchecked, with the slice it is in.
fn slice_endpoints<'a>(
    slices: &[&'a Arc<compact::EndpointSlice>],
    problems: &mut Vec<Problem>,
) -> Vec<(Object<'a>, Endpoint)> {
    let mut found = Vec::new();
    for slice in slices.iter().filter(|s| &*s.address_type != "FQDN") {
        let object = Object {
            kind: "EndpointSlice",
            meta: &slice.meta,
        };
        let ports = slice.ports.iter().map(|p| {
            let number = p.number.unwrap_or(0);
            (p.name.as_deref(), number, p.protocol.as_deref(), None)
        });
        let ports = endpoint_ports(ports, object, problems);
        for endpoint in &slice.endpoints {
            // Kubernetes: an unknown ready condition is to be read as ready.
            let ready = endpoint.ready.unwrap_or(true);
            for address in &endpoint.addresses {
                let found_endpoint = Endpoint {
                    address: address.to_string(),
                    port: None,
                    ports: ports.clone(),
                    ready,
                    serving: endpoint.serving.unwrap_or(ready),
                    terminating: endpoint.terminating.unwrap_or(false),
                    node: compact::owned(&endpoint.node),
                    zone: compact::owned(&endpoint.zone),
                    target_pod: compact::owned(&endpoint.pod),
                };
                found.push((object, found_endpoint));
            }
        }
    }
    found
}

/// Every address of a legacy Endpoints object, ready or not, unchecked, with the object.
fn legacy_endpoints<'a>(
    endpoints: Option<&'a compact::Endpoints>,
    problems: &mut Vec<Problem>,
) -> Vec<(Object<'a>, Endpoint)> {
    let Some(endpoints) = endpoints else {
        return Vec::new();
    };
    let object = Object {
        kind: "Endpoints",
        meta: &endpoints.meta,
    };
    let mut found = Vec::new();
    for subset in &endpoints.subsets {
        let ports = subset
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref(), None));
        let ports = endpoint_ports(ports, object, problems);
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (address, ready) in ready.chain(not_ready) {
            let endpoint = Endpoint {
                address: address.ip.clone(),
                port: None,
                ports: ports.clone(),
                ready,
                serving: ready,
                terminating: false,
                node: address.node_name.clone(),
                zone: None,
                target_pod: pod_name(address.target_ref.as_ref()),
            };
            found.push((object, endpoint));
        }
    }
    found
}

/// An object, as messages name it (`Service namespace/name`): written out only for a message.
#[derive(Clone, Copy)]
struct Object<'a> {
    kind: &'static str,
    meta: &'a Meta,
}

impl Object<'_> {
    /// A part of this object, which `reason` names, is left out.
    fn problem(self, reason: &str) -> Problem {
        Problem::part(&self.to_string(), reason)
    }
}

impl std::fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind,
            namespace(self.meta),
            name(self.meta)
        )
    }
}

fn namespace(meta: &Meta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name(meta: &Meta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn pod_name(target: Option<&k8s_openapi::api::core::v1::ObjectReference>) -> Option<String> {
    target
        .filter(|t| t.kind.as_deref() == Some("Pod"))
        .and_then(|t| t.name.clone())
}

fn protocol(name: Option<&str>) -> Protocol {
    match name {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// A port as Kubernetes declares it: (name, number, protocol, appProtocol).
type RawPort<'a> = (Option<&'a str>, i32, Option<&'a str>, Option<&'a str>);

/// The valid ports among `ports` of `object`; each invalid one is a problem.
fn valid_ports<'a>(
    ports: impl Iterator<Item = RawPort<'a>>,
    object: Object,
    problems: &mut Vec<Problem>,
) -> Vec<ServicePort> {
    let mut valid = Vec::new();
    for (name, number, protocol_name, app_protocol) in ports {
        let name = name.unwrap_or_default();
        let checked = check_port_name(name)
            .and_then(|()| {
                u16::try_from(number)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{number} is not a port number (1-65535)"))
            })
            .and_then(|number| {
                app_protocol.map(check_app_protocol).transpose()?;
                Ok(number)
            });
        match checked {
            Ok(number) => valid.push(ServicePort {
                name: name.to_string(),
                number,
                protocol: protocol(protocol_name),
                app_protocol: app_protocol.map(str::to_string),
            }),
            Err(reason) => {
                problems.push(object.problem(&format!("port {name:?} left out: {reason}")))
            }
        }
    }
    valid
}

fn endpoint_ports<'a>(
    ports: impl Iterator<Item = RawPort<'a>>,
    object: Object,
    problems: &mut Vec<Problem>,
) -> Vec<EndpointPort> {
    valid_ports(ports, object, problems)
        .into_iter()
        .map(|p| EndpointPort {
            name: p.name,
            number: p.number,
            protocol: p.protocol,
        })
        .collect()
}

fn service_ports(
    service: &compact::Service,
    object: Object,
    problems: &mut Vec<Problem>,
) -> Vec<ServicePort> {
    let ports = service.ports.iter().map(|p| {
        let app_protocol = p.app_protocol.as_deref();
        let number = p.number.unwrap_or(0);
        (
            p.name.as_deref(),
            number,
            p.protocol.as_deref(),
            app_protocol,
        )
    });
    valid_ports(ports, object, problems)
}

/// For an Endpoints object without a Service: the ports its addresses serve, by name.
fn ports_from_endpoints(endpoints: &[Endpoint]) -> Vec<ServicePort> {
    let mut ports: Vec<ServicePort> = Vec::new();
    for port in endpoints.iter().flat_map(|e| &e.ports) {
        if !ports.iter().any(|p| p.name == port.name) {
            ports.push(ServicePort {
                name: port.name.clone(),
                number: port.number,
                protocol: port.protocol,
                app_protocol: None,
            });
        }
    }
    ports
}

/// `endpoint` with its address in canonical form, if every field is valid.
fn check_endpoint(mut endpoint: Endpoint, rules: &Rules) -> Result<Endpoint, String> {
    let address = check_address(&endpoint.address, rules.allow_loopback)
        .map_err(|e| format!("endpoint {:?} left out: {e}", endpoint.address))?;
    let fields = [
        (
            "node",
            &endpoint.node,
            check_subdomain as fn(&str) -> Result<(), String>,
        ),
        ("zone", &endpoint.zone, check_label_value),
        ("target pod", &endpoint.target_pod, check_subdomain),
    ];
    for (field, value, check) in fields {
        if let Some(value) = value {
            check(value)
                .map_err(|e| format!("endpoint {address} left out: its {field} {value:?} {e}"))?;
        }
    }
    // An IPv4 address that parses is written as it is canonically (no leading zero, no other
    // form is read); an IPv6 one may not be (`2001:DB8:0::1` is `2001:db8::1`).
    if address.is_ipv6() {
        endpoint.address = address.to_string();
    }
    Ok(endpoint)
}

/// An endpoint address: an IPv4 or IPv6 address (no port, no brackets, no zone) that can be a
/// pod's. Refused: unspecified (`0.0.0.0`, `::`: HAProxy would send the traffic to whatever
/// address the client connected to), multicast and broadcast, link-local (`169.254.0.0/16`,
/// where cloud metadata services answer, and `fe80::/10`), and loopback unless allowed.
pub fn check_address(address: &str, allow_loopback: bool) -> Result<IpAddr, String> {
    let ip: IpAddr = address
        .parse()
        .map_err(|_| "not an IPv4 or IPv6 address".to_string())?;
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if ip.is_unspecified() {
        Err("an unspecified address (HAProxy would send traffic to the address the client connected to)".into())
    } else if ip.is_multicast() || link_local {
        Err("a multicast, broadcast or link-local address, never a pod's".into())
    } else if ip.is_loopback() && !allow_loopback {
        Err(
            "a loopback address, which would reach the proxy node itself \
             (--allow-loopback-endpoints allows it, for development)"
                .into(),
        )
    } else {
        Ok(ip)
    }
}

/// A port name: empty, or at most 63 lower-case letters, digits and inner hyphens.
fn check_port_name(name: &str) -> Result<(), String> {
    if name.is_empty() || check_label(name) {
        Ok(())
    } else {
        Err(
            "not a valid port name (at most 63 lower-case letters, digits and inner hyphens)"
                .into(),
        )
    }
}

/// An `appProtocol`: an IANA service name or a prefixed one such as `kubernetes.io/h2c`.
fn check_app_protocol(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!("appProtocol {value:?} is not a protocol name"))
    }
}

/// A DNS-1123 label: 1-63 lower-case letters, digits and inner hyphens.
fn check_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// A DNS-1123 subdomain (node and pod names): dot-separated labels, at most 253 characters.
fn check_subdomain(text: &str) -> Result<(), String> {
    if text.len() <= 253 && text.split('.').all(check_label) {
        Ok(())
    } else {
        Err("is not a valid Kubernetes name".into())
    }
}

/// A label value (zones): at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
fn check_label_value(text: &str) -> Result<(), String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err("is not a valid label value".into())
    }
}

/// The port `wanted` names, by name or else by number.
fn select_port(ports: &[ServicePort], wanted: &str) -> Result<String, String> {
    ports
        .iter()
        .find(|p| p.name == wanted)
        .or_else(|| ports.iter().find(|p| wanted.parse() == Ok(p.number)))
        .map(|p| p.name.clone())
        .ok_or_else(|| {
            let names: Vec<_> = ports
                .iter()
                .map(|p| format!("{} ({})", p.name, p.number))
                .collect();
            format!(
                "annotation {PORT}: no port named or numbered {wanted:?}; the ports are: {}",
                names.join(", ")
            )
        })
}

/// Without a port annotation: the only port, else the one named like the proto, else the first.
fn default_port(ports: &[ServicePort], proto: &str) -> Option<String> {
    ports
        .iter()
        .find(|p| p.name == proto)
        .or(ports.first())
        .map(|p| p.name.clone())
}

/// The oldest service keeps a (proto, domain, path); a younger one claiming it is skipped whole.
/// Which of `services` (sorted by namespace and name) are kept.
fn resolve_domain_conflicts(services: &[Arc<Service>], problems: &mut Vec<Problem>) -> Vec<bool> {
    // `services` are sorted by namespace and name, which a stable sort keeps among equals.
    let mut by_age: Vec<usize> = (0..services.len()).collect();
    by_age.sort_by_key(|&i| services[i].creation_time.unwrap_or(i64::MAX));
    let mut owners: foldhash::HashMap<(&str, &str, &str), &Service> = foldhash::HashMap::default();
    let mut kept = vec![true; services.len()];
    for i in by_age {
        let service = &services[i];
        let path = path_of(service);
        let proto = service.proto.as_str();
        let taken = service
            .domains
            .iter()
            .find_map(|d| owners.get(&(proto, d, path)).map(|owner| (d, owner)));
        if let Some((domain, owner)) = taken {
            let path = if path.is_empty() {
                String::new()
            } else {
                format!(" path {path}")
            };
            problems.push(Problem::new(
                &format!("Service {}/{}", service.namespace, service.name),
                &format!(
                    "domain {domain}{path} ({}) is already claimed by the older service {}/{}; \
                     remove it from one of them",
                    service.proto, owner.namespace, owner.name
                ),
            ));
            kept[i] = false;
            continue;
        }
        for domain in &service.domains {
            owners.insert((proto, domain, path), service);
        }
    }
    kept
}

/// A URL path prefix: `/`, then letters, digits and `/._~-`.
pub fn check_path(path: &str) -> Result<(), String> {
    let valid = path.starts_with('/')
        && path.len() <= 256
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._~-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{path:?} is not a path prefix: it must start with / and hold at most 256 letters, \
             digits and /._~-"
        ))
    }
}

/// A comma-separated list of domains, each lower-cased and checked.
pub fn parse_domains(value: &str) -> Result<Vec<String>, String> {
    let mut domains = Vec::new();
    for item in value.split(',') {
        let domain = item.trim_matches(' ').to_ascii_lowercase();
        check_domain(&domain)?;
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(domains)
}

/// A DNS-1123 hostname (a `*` first label allowed) or an IP address.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain (check for a stray comma)".into());
    }
    if domain == "*" {
        return Err("a bare `*` would take every host: use `*.example.com`".into());
    }
    if domain.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if domain.len() > 253 {
        return Err(format!(
            "domain of {} characters is longer than 253",
            domain.len()
        ));
    }
    for (i, label) in domain.split('.').enumerate() {
        let valid = (i == 0 && label == "*")
            || (!label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-'));
        if !valid {
            return Err(format!(
                "{domain:?} is not a hostname: each dot-separated label must be 1-63 letters, \
                 digits or inner hyphens (only the first label may be `*`)"
            ));
        }
    }
    Ok(())
}

/// A short lower-case token: a letter, then up to 31 letters, digits or hyphens.
pub fn check_proto(proto: &str) -> Result<(), String> {
    let mut bytes = proto.bytes();
    let valid = proto.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{proto:?} is not a proto: use a lower-case word such as http, https or redis"
        ))
    }
}

/// A Kubernetes object name as HAProxy names can carry it: a DNS-1123 label.
fn check_name(name: &str) -> Result<(), String> {
    if check_label(name) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid Kubernetes name"))
    }
}

/// A listen port within `allowed`.
fn parse_listen_port(value: &str, allowed: &RangeInclusive<u16>) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(port) if allowed.contains(&port) => Ok(port),
        Ok(port) if port > 0 => Err(format!(
            "port {port} is outside the listen ports this proxy hands out ({}-{}, \
             --listen-ports)",
            allowed.start(),
            allowed.end()
        )),
        _ => Err(format!("{value:?} is not a port number (1-65535)")),
    }
}

/// For randomized tests: numbers below `n` from a xorshift sequence started at `seed`, the same
/// on every run.
#[cfg(test)]
pub(crate) fn reproducible_random(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_snapshot;

    fn model(yaml: &str) -> (Vec<Service>, Vec<Problem>) {
        let (objects, problems) = parse_snapshot(yaml).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let (services, problems) = build(&objects, &Rules::default());
        let services = services.into_iter().map(Arc::unwrap_or_clone).collect();
        (services, problems)
    }

    fn service(name: &str, annotations: &str, created: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: ns\n  \
             creationTimestamp: \"{created}\"\n  annotations:\n{annotations}\nspec:\n  ports:\n  \
             - name: http\n    port: 80\n  - name: admin\n    port: 9000\n---\n"
        )
    }

    #[test]
    fn the_kept_model_converts_only_what_changed_and_equals_a_full_build() {
        let slice = |name: &str, ip: &str| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
                 metadata: {{name: {name}-1, namespace: ns, labels: \
                 {{kubernetes.io/service-name: {name}}}}}\n\
                 ports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{ip}]}}]\n---\n"
            )
        };
        let annotations = |domain: &str| {
            format!(
                "    wasmconfd.io/proto: http\n    wasmconfd.io/domain: {domain}\n    wasmconfd.io/typo: x"
            )
        };
        let text = service("a", &annotations("a.test"), "2024-01-01T00:00:00Z")
            + &slice("a", "10.0.0.1")
            + &service("b", &annotations("b.test"), "2024-01-01T00:00:00Z")
            + &slice("b", "10.0.0.2")
            + &service("c", &annotations("a.test"), "2024-02-01T00:00:00Z");
        let (mut objects, _) = parse_snapshot(&text).unwrap();
        let rules = Rules::default();
        let mut kept = Model::default();
        let (first, first_problems) = kept.build(&objects, &rules);
        assert_eq!(first.len(), 2, "c claims a's domain and is left out");
        assert_eq!(first_problems.len(), 4, "{first_problems:?}");

        // b's endpoints move: a new EndpointSlice object, as the watch caches hold it.
        let moved = slice("b", "10.0.0.9");
        let (moved, _) = parse_snapshot(&moved).unwrap();
        objects.endpoint_slices[1] = moved.endpoint_slices[0].clone();
        let (second, second_problems) = kept.build(&objects, &rules);
        assert!(
            Arc::ptr_eq(&first[0], &second[0]),
            "a is not converted again"
        );
        assert!(!Arc::ptr_eq(&first[1], &second[1]));
        assert_eq!(second[1].endpoints[0].address, "10.0.0.9");
        assert_eq!(
            second_problems, first_problems,
            "problems are still reported"
        );

        let (full, full_problems) = build(&objects, &rules);
        assert_eq!(second, full);
        assert_eq!(second_problems, full_problems);
    }

    /// Random sequences of changes (services added, removed, re-annotated, their endpoints
    /// moved, legacy Endpoints objects), as the watch caches hold them: after each one, the
    /// kept model equals a full build.
    #[test]
    fn after_any_sequence_of_changes_the_kept_model_equals_a_full_build() {
        let mut random = reproducible_random(0x2545_f491_4f6c_dd1d);
        let object = |text: String| parse_snapshot(&text).unwrap().0;
        let rules = Rules::default();
        let mut objects = Objects::default();
        let mut kept = Model::default();
        for step in 0..400 {
            let i = random(12);
            let name = format!("s{i}");
            let domain = format!("d{}.test", random(6));
            match random(5) {
                0 => objects
                    .services
                    .retain(|s| s.meta.name.as_deref() != Some(&name)),
                1 => {
                    let path = ["", "    wasmconfd.io/path: /x\n"][random(2) as usize];
                    let annotations = format!(
                        "    wasmconfd.io/proto: http\n    wasmconfd.io/domain: {domain}\n{path}"
                    );
                    let created = format!("2024-01-{:02}T00:00:00Z", random(28) + 1);
                    let new = object(service(&name, annotations.trim_end(), &created)).services;
                    objects
                        .services
                        .retain(|s| s.meta.name.as_deref() != Some(&name));
                    objects.services.extend(new);
                }
                2 | 3 => {
                    let ip = ["10.0.0.1", "10.0.0.2", "0.0.0.0", "10.0.0.3"][random(4) as usize];
                    let new = object(format!(
                        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                         addressType: IPv4\nmetadata: {{name: {name}-a, namespace: ns, labels: \
                         {{kubernetes.io/service-name: {name}}}}}\n\
                         ports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{ip}]}}]"
                    ));
                    let slice_name = format!("{name}-a");
                    objects
                        .endpoint_slices
                        .retain(|s| s.meta.name.as_deref() != Some(&slice_name));
                    if random(4) > 0 {
                        objects.endpoint_slices.extend(new.endpoint_slices);
                    }
                }
                _ => {
                    let new = object(format!(
                        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: \
                         ns, annotations: {{proto: redis}}}}\nsubsets: [{{addresses: \
                         [{{ip: 10.0.1.{i}}}], ports: [{{port: 6379}}]}}]"
                    ));
                    objects
                        .endpoints
                        .retain(|e| e.meta.name.as_deref() != Some(&name));
                    if random(3) > 0 {
                        objects.endpoints.extend(new.endpoints);
                    }
                }
            }
            let (incremental, incremental_problems) = kept.build(&objects, &rules);
            let (full, full_problems) = build(&objects, &rules);
            assert_eq!(incremental, full, "step {step}");
            assert_eq!(incremental_problems, full_problems, "step {step}");
        }
    }

    #[test]
    fn domains_are_lower_cased_split_and_checked() {
        assert_eq!(
            parse_domains("A.example.com, *.b.example.com").unwrap(),
            ["a.example.com", "*.b.example.com"]
        );
        assert_eq!(parse_domains("10.1.2.3,::1").unwrap(), ["10.1.2.3", "::1"]);
        for bad in [
            "",
            "a,,b",
            "a b.com",
            "a\nfrontend x",
            "a#b",
            "\"a\"",
            "${X}",
            "bücher.de",
            "a.*.com",
            "-a.com",
            "a..b",
        ] {
            assert!(parse_domains(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn protos_are_short_lower_case_tokens() {
        assert!(check_proto("http").is_ok());
        assert!(check_proto("my-proto2").is_ok());
        for bad in [
            "",
            "HTTP",
            "http\n",
            "h ttp",
            "2http",
            "x".repeat(33).as_str(),
        ] {
            assert!(check_proto(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn oldest_service_keeps_a_contested_domain() {
        let yaml = [
            service(
                "young",
                "    wasmconfd.io/proto: http\n    wasmconfd.io/domain: shop.example.com",
                "2024-02-01T00:00:00Z",
            ),
            service(
                "old",
                "    wasmconfd.io/proto: http\n    wasmconfd.io/domain: shop.example.com",
                "2024-01-01T00:00:00Z",
            ),
            service(
                "other",
                "    wasmconfd.io/proto: https\n    wasmconfd.io/domain: shop.example.com",
                "2024-03-01T00:00:00Z",
            ),
        ]
        .concat();
        let (services, problems) = model(&yaml);
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["old", "other"],
            "the same domain under another proto is no conflict"
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].object == "Service ns/young" && problems[0].reason.contains("ns/old"),
            "{problems:?}"
        );
    }

    #[test]
    fn services_share_a_domain_under_different_paths() {
        let with = |name: &str, path: &str, created: &str| {
            let path = match path {
                "" => String::new(),
                path => format!("\n    wasmconfd.io/path: {path}"),
            };
            service(
                name,
                &format!(
                    "    wasmconfd.io/proto: paths\n    wasmconfd.io/domain: t.example.com{path}"
                ),
                created,
            )
        };
        let yaml = [
            with("root", "", "2024-01-01T00:00:00Z"),
            with("api", "/api", "2024-01-02T00:00:00Z"),
            with("api-too", "/api", "2024-01-03T00:00:00Z"),
            with("bad", "api", "2024-01-04T00:00:00Z"),
        ]
        .concat();
        let (services, problems) = model(&yaml);
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "root"]);
        let reasons: Vec<_> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].starts_with(
                "Service ns/bad: annotation wasmconfd.io/path: \"api\" is not a path prefix"
            ),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("domain t.example.com path /api (paths) is already claimed by the older service ns/api"), "{reasons:?}");
    }

    #[test]
    fn port_annotation_picks_a_port_by_name_or_number() {
        let by_number = service(
            "a",
            "    proto: http\n    wasmconfd.io/port: \"9000\"",
            "2024-01-01T00:00:00Z",
        );
        assert_eq!(model(&by_number).0[0].port.as_deref(), Some("admin"));
        let default = service("a", "    proto: http", "2024-01-01T00:00:00Z");
        assert_eq!(
            model(&default).0[0].port.as_deref(),
            Some("http"),
            "the port named like the proto"
        );
        let missing = service(
            "a",
            "    proto: http\n    wasmconfd.io/port: metrics",
            "2024-01-01T00:00:00Z",
        );
        let (services, problems) = model(&missing);
        assert!(services.is_empty());
        assert!(
            problems[0].reason.contains("metrics") && problems[0].reason.contains("admin (9000)")
        );
    }

    #[test]
    fn unannotated_objects_are_ignored_silently_but_half_annotated_ones_are_reported() {
        let (services, problems) = model(&service("a", "    other: x", "2024-01-01T00:00:00Z"));
        assert!(services.is_empty() && problems.is_empty());
        let (_, problems) = model(&service(
            "a",
            "    domain: a.example.com",
            "2024-01-01T00:00:00Z",
        ));
        assert!(
            problems[0].reason.contains("no wasmconfd.io/proto"),
            "{problems:?}"
        );
    }

    #[test]
    fn slices_win_over_legacy_endpoints_and_endpoints_are_merged_by_address() {
        let yaml = format!(
            "{}apiVersion: v1\nkind: Endpoints\nmetadata: {{name: a, namespace: ns}}\n\
             subsets:\n- addresses: [{{ip: 10.9.9.9}}]\n  ports: [{{name: http, port: 1}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
             metadata: {{name: a-1, namespace: ns, labels: {{kubernetes.io/service-name: a}}}}\n\
             ports: [{{name: http, port: 8080}}]\n\
             endpoints:\n- addresses: [10.0.0.2]\n  conditions: {{ready: false}}\n\
             - addresses: [10.0.0.1]\n  nodeName: n1\n  targetRef: {{kind: Pod, name: a-x}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
             metadata: {{name: a-2, namespace: ns, labels: {{kubernetes.io/service-name: a}}}}\n\
             ports: [{{name: http, port: 8080}}]\nendpoints:\n- addresses: [10.0.0.2]\n",
            service(
                "a",
                "    proto: http\n    domain: a.example.com",
                "2024-01-01T00:00:00Z"
            )
        );
        let (services, _) = model(&yaml);
        let endpoints = &services[0].endpoints;
        assert_eq!(endpoints.len(), 2, "{endpoints:?}");
        assert_eq!(
            (
                endpoints[0].address.as_str(),
                endpoints[0].port,
                endpoints[0].ready
            ),
            ("10.0.0.1", Some(8080), true)
        );
        assert_eq!(endpoints[0].target_pod.as_deref(), Some("a-x"));
        assert!(endpoints[1].ready, "ready in one slice is ready");
    }

    #[test]
    fn legacy_endpoints_alone_are_a_service_and_their_annotations_count() {
        let yaml = "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: legacy\n  namespace: ns\n  \
                    annotations: {domain: old.example.com, proto: http}\nsubsets:\n\
                    - addresses: [{ip: 10.1.0.1}]\n  notReadyAddresses: [{ip: 10.1.0.2}]\n  ports: [{port: 8080}]\n";
        let (services, problems) = model(yaml);
        assert!(problems.is_empty());
        let s = &services[0];
        assert_eq!(
            (s.domains[0].as_str(), s.ports[0].number, s.port.as_deref()),
            ("old.example.com", 8080, Some(""))
        );
        assert_eq!(
            s.endpoints
                .iter()
                .map(|e| (e.ready, e.port))
                .collect::<Vec<_>>(),
            [(true, Some(8080)), (false, Some(8080))]
        );

        let empty = "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: empty\n  \
                     annotations: {domain: e.example.com, proto: http}\nsubsets: []\n";
        let (services, problems) = model(empty);
        assert!(
            problems.is_empty() && services[0].endpoints.is_empty() && services[0].port.is_none()
        );
    }

    #[test]
    fn a_service_annotated_on_both_objects_appears_once_and_its_own_keys_win() {
        let yaml = format!(
            "{}apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: a\n  namespace: ns\n  \
             annotations: {{domain: old.example.com, proto: http, wasmconfd.io/listen-port: '7000', \
             wasmconfd.io/domain: older.example.com}}\n",
            service(
                "a",
                "    wasmconfd.io/domain: new.example.com\n    wasmconfd.io/proto: http",
                "2024-01-01T00:00:00Z"
            )
        );
        let (services, _) = model(&yaml);
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].domains, ["new.example.com"]);
        assert_eq!(
            services[0].listen_port,
            Some(7000),
            "keys the Service lacks come from its Endpoints"
        );
        let keys: Vec<_> = services[0].annotations.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "domain",
                "proto",
                "wasmconfd.io/domain",
                "wasmconfd.io/listen-port",
                "wasmconfd.io/proto"
            ],
            "once each, sorted"
        );
    }

    #[test]
    fn a_service_with_no_ports_is_reported() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  annotations: {proto: http, domain: x.com}\nspec: {}\n";
        let (services, problems) = model(yaml);
        assert!(services.is_empty());
        assert_eq!(problems[0].object, "Service default/x");
    }

    #[test]
    fn endpoint_addresses_are_kept_in_canonical_form() {
        for (given, kept) in [
            ("10.1.2.3", "10.1.2.3"),
            ("2001:DB8:0::1", "2001:db8::1"),
            ("fd00:0:0:0:0:0:0:5", "fd00::5"),
        ] {
            let endpoint = Endpoint {
                address: given.into(),
                port: Some(80),
                ports: Vec::new(),
                ready: true,
                serving: true,
                terminating: false,
                node: None,
                zone: None,
                target_pod: None,
            };
            let checked = check_endpoint(endpoint, &Rules::default()).unwrap();
            assert_eq!(checked.address, kept);
        }
    }

    #[test]
    fn endpoint_addresses_must_be_ip_addresses_of_pods() {
        for good in ["10.1.2.3", "fd00::1", "2001:db8::5"] {
            assert!(check_address(good, false).is_ok(), "{good} refused");
        }
        for bad in [
            "",
            "10.1.21.1\n  server x 10.97.0.1:80",
            "evil.example.com",
            "[::1]",
            "1.2.3.4:80",
            "fd@3",
            "${HOME}",
            "0.0.0.0",
            "::",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            " 10.1.2.3",
            "10.1.2.03",
            "10.1.2",
            "0x0a.1.2.3",
        ] {
            assert!(check_address(bad, false).is_err(), "{bad:?} accepted");
        }
        assert!(check_address("127.0.0.1", true).is_ok());
        assert!(check_address("::1", true).is_ok());
    }

    #[test]
    fn a_bad_endpoint_is_left_out_naming_its_slice_and_the_service_stays() {
        let slice = |name: &str, endpoint: &str, port: i32| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
                 metadata: {{name: {name}, namespace: ns, labels: {{kubernetes.io/service-name: a}}}}\n\
                 ports: [{{name: http, port: {port}}}]\nendpoints: [{endpoint}]\n---\n"
            )
        };
        let yaml = [
            service(
                "a",
                "    proto: http\n    domain: a.example.com",
                "2024-01-01T00:00:00Z",
            ),
            slice(
                "good",
                "{addresses: [10.0.0.1], nodeName: n-1.example, zone: eu-west_1.a}",
                80,
            ),
            slice("host", "{addresses: [evil.example.com]}", 80),
            slice("node", "{addresses: [10.0.0.2], nodeName: \"n\\nx\"}", 80),
            slice("zone", "{addresses: [10.0.0.3], zone: \"a zone\"}", 80),
            slice(
                "pod",
                "{addresses: [10.0.0.4], targetRef: {kind: Pod, name: Pod_X}}",
                80,
            ),
            slice("zero", "{addresses: [10.0.0.5]}", 0),
            slice("loop", "{addresses: [127.0.0.1]}", 80),
        ]
        .concat();
        let (objects, _) = parse_snapshot(&yaml).unwrap();
        let (services, problems) = build(&objects, &Rules::default());
        let addresses: Vec<_> = services[0]
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.port))
            .collect();
        assert_eq!(
            addresses,
            [("10.0.0.1", Some(80)), ("10.0.0.5", None)],
            "a slice whose port is invalid keeps its endpoints, without that port"
        );
        let objects: std::collections::BTreeSet<_> =
            problems.iter().map(|p| p.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                "EndpointSlice ns/host",
                "EndpointSlice ns/loop",
                "EndpointSlice ns/node",
                "EndpointSlice ns/pod",
                "EndpointSlice ns/zero",
                "EndpointSlice ns/zone",
            ]
            .into(),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 6, "{problems:?}");
        let node = problems
            .iter()
            .find(|p| p.object == "EndpointSlice ns/node");
        assert!(node.unwrap().reason.contains("\\n"), "escaped: {node:?}");

        let rules = Rules {
            allow_loopback: true,
            ..Rules::default()
        };
        let (services, _) = build(&objects_of(&yaml), &rules);
        assert!(
            services[0]
                .endpoints
                .iter()
                .any(|e| e.address == "127.0.0.1")
        );
    }

    fn objects_of(yaml: &str) -> Objects {
        parse_snapshot(yaml).unwrap().0
    }

    #[test]
    fn listen_ports_are_handed_out_only_within_the_range() {
        let redis = |port: &str| {
            service(
                "r",
                &format!("    proto: redis\n    wasmconfd.io/listen-port: \"{port}\""),
                "2024-01-01T00:00:00Z",
            )
        };
        assert_eq!(model(&redis("6379")).0[0].listen_port, Some(6379));
        for refused in ["80", "443", "22", "0", "65536", "http"] {
            let (services, problems) = model(&redis(refused));
            assert!(services.is_empty(), "{refused} accepted");
            assert!(problems[0].reason.contains(LISTEN_PORT), "{problems:?}");
        }
        let (_, problems) = model(&redis("80"));
        assert!(problems[0].reason.contains("1024-65535"), "{problems:?}");
        let rules = Rules {
            listen_ports: 80..=80,
            ..Rules::default()
        };
        let (services, _) = build(&objects_of(&redis("80")), &rules);
        assert_eq!(services[0].listen_port, Some(80));
    }

    #[test]
    fn a_bare_star_is_not_a_domain_and_names_are_escaped_in_problems() {
        assert!(parse_domains("*").is_err());
        assert!(parse_domains("*.example.com").is_ok());
        let problem = Problem::new("Service ns/a\nb\u{1b}[31m", "bad \r");
        assert_eq!(problem.to_string(), "Service ns/a\\nb\\u{1b}[31m: bad \\r");
    }

    #[test]
    fn misspelt_annotations_are_reported_with_the_key_they_likely_mean() {
        let (services, problems) = model(&service(
            "a",
            "    wasmconfd.io/proto: http\n    wasmconfd.io/domians: a.example.com",
            "2024-01-01T00:00:00Z",
        ));
        assert_eq!(services.len(), 1, "the service is still routed");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].reason.contains("wasmconfd.io/domians")
                && problems[0]
                    .reason
                    .contains("did you mean wasmconfd.io/domain?"),
            "{problems:?}"
        );
        // Without a proto annotation, any of wasmconfd's keys says the object was meant to be
        // routed.
        let (services, problems) = model(&service(
            "a",
            "    wasmconfd.io/protocol: http",
            "2024-01-01T00:00:00Z",
        ));
        assert!(services.is_empty());
        assert!(
            problems[0]
                .reason
                .contains("has wasmconfd.io/protocol but no wasmconfd.io/proto"),
            "{problems:?}"
        );
        assert_eq!(
            edit_distance("wasmconfd.io/protocol", "wasmconfd.io/proto"),
            3
        );
    }
}
