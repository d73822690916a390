//! Kubernetes objects -> the validated model guests see. Pure functions, no I/O.
//!
//! A service is ours when it (or its legacy Endpoints object, python-confd style) carries a
//! proto annotation. Everything in the annotations is checked here, before any guest sees it:
//! an object that fails is skipped with a [`Problem`] that names it, and the rest renders.

use crate::bindings::{Endpoint, EndpointPort, Protocol, Service, ServicePort};
use crate::source::Objects;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Annotation keys, each with the bare key python-confd used as a fallback.
pub const DOMAIN: [&str; 2] = ["wasmconfd.io/domain", "domain"];
pub const PROTO: [&str; 2] = ["wasmconfd.io/proto", "proto"];
pub const PORT: &str = "wasmconfd.io/port";
pub const LISTEN_PORT: &str = "wasmconfd.io/listen-port";
/// A path prefix: services may share a domain when their paths differ.
pub const PATH: &str = "wasmconfd.io/path";

/// Dropped from the annotations guests see: large, and a copy of the object itself.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object that was left out of the model, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `Service namespace/name` or `Endpoints namespace/name`.
    pub object: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// Log each object that was left out, and why.
pub fn warn_skipped(problems: &[Problem]) {
    for problem in problems {
        tracing::warn!(object = %problem.object, "skipped: {}", problem.reason);
    }
}

/// The services of `objects` that carry a valid proto annotation, sorted by namespace and name,
/// and the problems found with the others.
pub fn build(objects: &Objects) -> (Vec<Service>, Vec<Problem>) {
    let mut problems = Vec::new();

    let mut slices: HashMap<(&str, &str), Vec<&discovery::EndpointSlice>> = HashMap::new();
    for slice in &objects.endpoint_slices {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            slices
                .entry((namespace(&slice.metadata), service))
                .or_default()
                .push(slice);
        }
    }
    let legacy: HashMap<(&str, &str), &core::Endpoints> = objects
        .endpoints
        .iter()
        .map(|e| ((namespace(&e.metadata), name(&e.metadata)), e))
        .collect();

    let mut candidates = Vec::new();
    for service in &objects.services {
        let key = (namespace(&service.metadata), name(&service.metadata));
        let endpoints = legacy.get(&key).copied();
        let backing = match slices.get(&key) {
            Some(slices) => Backing::Slices(slices),
            None => Backing::Legacy(endpoints),
        };
        candidates.push(Candidate {
            kind: "Service",
            meta: &service.metadata,
            // python-confd annotated Endpoints objects: their keys count where the Service has none.
            extra: endpoints.map(|e| &e.metadata),
            ports: Some(service_ports(service)),
            backing,
        });
    }
    let with_service: std::collections::HashSet<_> = objects
        .services
        .iter()
        .map(|s| (namespace(&s.metadata), name(&s.metadata)))
        .collect();
    for endpoints in &objects.endpoints {
        let key = (namespace(&endpoints.metadata), name(&endpoints.metadata));
        if !with_service.contains(&key) {
            candidates.push(Candidate {
                kind: "Endpoints",
                meta: &endpoints.metadata,
                extra: None,
                ports: None,
                backing: Backing::Legacy(Some(endpoints)),
            });
        }
    }

    let mut services = Vec::new();
    for candidate in candidates {
        match candidate.to_service() {
            Ok(Some(service)) => services.push(service),
            Ok(None) => {}
            Err(reason) => problems.push(Problem {
                object: candidate.id(),
                reason,
            }),
        }
    }
    let mut services = resolve_domain_conflicts(services, &mut problems);
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (services, problems)
}

/// Where a service's endpoints come from: its EndpointSlices when it has any, else its legacy
/// Endpoints object (the same addresses, so never both).
enum Backing<'a> {
    Slices(&'a [&'a discovery::EndpointSlice]),
    Legacy(Option<&'a core::Endpoints>),
}

struct Candidate<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    extra: Option<&'a ObjectMeta>,
    ports: Option<Vec<ServicePort>>,
    backing: Backing<'a>,
}

impl Candidate<'_> {
    fn id(&self) -> String {
        format!("{} {}/{}", self.kind, namespace(self.meta), name(self.meta))
    }

    /// The annotations: the object's own, then the legacy Endpoints' for keys it lacks.
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for meta in self.extra.into_iter().chain([self.meta]) {
            all.extend(meta.annotations.clone().unwrap_or_default());
        }
        all.remove(LAST_APPLIED);
        all
    }

    /// `Ok(None)` for an object that is not ours (no proto annotation).
    fn to_service(&self) -> Result<Option<Service>, String> {
        let annotations = self.annotations();
        let get = |keys: &[&'static str]| {
            keys.iter()
                .find_map(|k| annotations.get(*k).map(|v| (*k, v)))
        };
        let Some((proto_key, proto)) = get(&PROTO) else {
            if let Some((key, _)) = get(&[DOMAIN[0], DOMAIN[1], PORT, LISTEN_PORT]) {
                return Err(format!(
                    "has {key} but no {} annotation, so it is not routed; add one (for example `http`)",
                    PROTO[0]
                ));
            }
            return Ok(None);
        };
        check_proto(proto).map_err(|e| format!("annotation {proto_key}: {e}"))?;
        check_name(namespace(self.meta)).map_err(|e| format!("namespace: {e}"))?;
        check_name(name(self.meta)).map_err(|e| format!("name: {e}"))?;
        let domains = match get(&DOMAIN) {
            Some((key, value)) => {
                parse_domains(value).map_err(|e| format!("annotation {key}: {e}"))?
            }
            None => Vec::new(),
        };
        if let Some(path) = annotations.get(PATH) {
            check_path(path).map_err(|e| format!("annotation {PATH}: {e}"))?;
        }
        let listen_port = annotations
            .get(LISTEN_PORT)
            .map(|v| parse_port(v).map_err(|e| format!("annotation {LISTEN_PORT}: {e}")))
            .transpose()?;

        let mut endpoints = self.endpoints();
        let ports = match &self.ports {
            Some(ports) => ports.clone(),
            None => ports_from_endpoints(&endpoints),
        };
        if ports.is_empty() && self.ports.is_some() {
            return Err("declares no ports, so there is nothing to send traffic to".into());
        }
        let port = match annotations.get(PORT) {
            Some(wanted) => Some(select_port(&ports, wanted)?),
            None => default_port(&ports, proto),
        };
        if let Some(port) = &port {
            for endpoint in &mut endpoints {
                endpoint.port = endpoint
                    .ports
                    .iter()
                    .find(|p| &p.name == port)
                    .map(|p| p.number);
            }
        }

        let labels = self.meta.labels.clone().unwrap_or_default();
        Ok(Some(Service {
            namespace: namespace(self.meta).to_string(),
            name: name(self.meta).to_string(),
            domains,
            proto: proto.clone(),
            ports,
            port,
            listen_port,
            endpoints,
            annotations: annotations.into_iter().collect(),
            labels: labels.into_iter().collect(),
            creation_time: self
                .meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        }))
    }

    /// Every endpoint, one per address (ports merged, ready if ready anywhere), sorted by address.
    fn endpoints(&self) -> Vec<Endpoint> {
        let mut by_address: BTreeMap<String, Endpoint> = BTreeMap::new();
        let mut add = |endpoint: Endpoint| match by_address.get_mut(&endpoint.address) {
            Some(seen) => {
                seen.ready |= endpoint.ready;
                seen.serving |= endpoint.serving;
                seen.terminating &= endpoint.terminating;
                for port in endpoint.ports {
                    if !seen.ports.contains(&port) {
                        seen.ports.push(port);
                    }
                }
            }
            None => {
                by_address.insert(endpoint.address.clone(), endpoint);
            }
        };
        match self.backing {
            Backing::Slices(slices) => {
                for slice in slices.iter().filter(|s| s.address_type != "FQDN") {
                    let ports: Vec<_> = slice
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some(EndpointPort {
                                name: p.name.clone().unwrap_or_default(),
                                number: u16::try_from(p.port?).ok()?,
                                protocol: protocol(p.protocol.as_deref()),
                            })
                        })
                        .collect();
                    for endpoint in &slice.endpoints {
                        let conditions = endpoint.conditions.clone().unwrap_or_default();
                        // Kubernetes: an unknown ready condition is to be read as ready.
                        let ready = conditions.ready.unwrap_or(true);
                        for address in &endpoint.addresses {
                            add(Endpoint {
                                address: address.clone(),
                                port: None,
                                ports: ports.clone(),
                                ready,
                                serving: conditions.serving.unwrap_or(ready),
                                terminating: conditions.terminating.unwrap_or(false),
                                node: endpoint.node_name.clone(),
                                zone: endpoint.zone.clone(),
                                target_pod: pod_name(endpoint.target_ref.as_ref()),
                            });
                        }
                    }
                }
            }
            Backing::Legacy(endpoints) => {
                for subset in endpoints.iter().flat_map(|e| e.subsets.iter().flatten()) {
                    let ports: Vec<_> = subset
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some(EndpointPort {
                                name: p.name.clone().unwrap_or_default(),
                                number: u16::try_from(p.port).ok()?,
                                protocol: protocol(p.protocol.as_deref()),
                            })
                        })
                        .collect();
                    let ready = subset.addresses.iter().flatten().map(|a| (a, true));
                    let not_ready = subset
                        .not_ready_addresses
                        .iter()
                        .flatten()
                        .map(|a| (a, false));
                    for (address, ready) in ready.chain(not_ready) {
                        add(Endpoint {
                            address: address.ip.clone(),
                            port: None,
                            ports: ports.clone(),
                            ready,
                            serving: ready,
                            terminating: false,
                            node: address.node_name.clone(),
                            zone: None,
                            target_pod: pod_name(address.target_ref.as_ref()),
                        });
                    }
                }
            }
        }
        by_address.into_values().collect()
    }
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn pod_name(target: Option<&core::ObjectReference>) -> Option<String> {
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

fn service_ports(service: &core::Service) -> Vec<ServicePort> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                number: u16::try_from(p.port).ok()?,
                protocol: protocol(p.protocol.as_deref()),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
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
fn resolve_domain_conflicts(
    mut services: Vec<Service>,
    problems: &mut Vec<Problem>,
) -> Vec<Service> {
    services.sort_by(|a, b| {
        let age = |s: &Service| s.creation_time.unwrap_or(i64::MAX);
        (age(a), &a.namespace, &a.name).cmp(&(age(b), &b.namespace, &b.name))
    });
    let mut owners: HashMap<(String, String, String), String> = HashMap::new();
    let mut kept = Vec::with_capacity(services.len());
    for service in services {
        let id = format!("{}/{}", service.namespace, service.name);
        let path = service
            .annotations
            .iter()
            .find(|(k, _)| k == PATH)
            .map_or("", |(_, v)| v.as_str());
        let claim = |domain: &String| (service.proto.clone(), domain.clone(), path.to_string());
        let taken = service
            .domains
            .iter()
            .find_map(|d| owners.get(&claim(d)).map(|owner| (d, owner)));
        if let Some((domain, owner)) = taken {
            let path = if path.is_empty() {
                String::new()
            } else {
                format!(" path {path}")
            };
            problems.push(Problem {
                object: format!("Service {id}"),
                reason: format!(
                    "domain {domain}{path} ({}) is already claimed by the older service {owner}; \
                     remove it from one of them",
                    service.proto
                ),
            });
            continue;
        }
        for domain in &service.domains {
            owners.insert(claim(domain), id.clone());
        }
        kept.push(service);
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
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid Kubernetes name"))
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{value:?} is not a port number (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_snapshot;

    fn model(yaml: &str) -> (Vec<Service>, Vec<Problem>) {
        let (objects, problems) = parse_snapshot(yaml).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        build(&objects)
    }

    fn service(name: &str, annotations: &str, created: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: ns\n  \
             creationTimestamp: \"{created}\"\n  annotations:\n{annotations}\nspec:\n  ports:\n  \
             - name: http\n    port: 80\n  - name: admin\n    port: 9000\n---\n"
        )
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
             annotations: {{domain: old.example.com, proto: http, wasmconfd.io/listen-port: '7000'}}\n",
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
    }

    #[test]
    fn a_service_with_no_ports_is_reported() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  annotations: {proto: http, domain: x.com}\nspec: {}\n";
        let (services, problems) = model(yaml);
        assert!(services.is_empty());
        assert_eq!(problems[0].object, "Service default/x");
    }
}
