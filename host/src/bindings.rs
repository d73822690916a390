//! The WIT contract, as Rust types and the functions to call a guest. The model the host builds
//! *is* these types: there is no second copy to keep in step. A guest's output is lifted into
//! the host's own [`Section`], [`Directive`] and [`Placement`] (`crate::fragment`).
//!
//! Five versions load: the current one (`wit/`); 0.4.0 (`wit/0.4.0/`), whose `description`
//! cannot say whether the guest reads the services' ports; 0.3.0 (`wit/0.3.0/`), whose
//! `description` cannot say which annotations, labels and endpoint details it reads either;
//! 0.2.0 (`wit/0.2.0/`), whose `cluster` has no `tls` and whose world has no `servers`; and
//! 0.1.0 (`wit/0.1.0/`), whose world has no `describe`. Every other record is the same in all
//! five, so a guest of any version is handed the same services and returns the same
//! [`Fragment`]: only the record around the services differs ([`Input::older`]).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "guest",
    additional_derives: [PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize],
});

/// Guests built for `wasmconfd:haproxy@0.4.0`.
pub mod v0_4 {
    wasmtime::component::bindgen!({
        path: "../wit/0.4.0",
        world: "guest",
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

/// Guests built for `wasmconfd:haproxy@0.3.0`.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "guest",
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

/// Guests built for `wasmconfd:haproxy@0.2.0`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "guest",
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

/// Guests built for `wasmconfd:haproxy@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "guest",
        with: {
            "wasmconfd:haproxy/types@0.1.0": super::v0_2::wasmconfd::haproxy::types,
        },
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

pub use self::wasmconfd::haproxy::host::Level;
pub use self::wasmconfd::haproxy::types::*;
// A guest's output records are lifted into the host's own types (`crate::fragment`), which
// these names mean here rather than the ones above.
pub use crate::fragment::{Directive, Section, WitFragment};
use std::sync::Arc;
use wasmtime::component::{ComponentType, Lower};

/// A guest's input as the host holds it: the WIT record `cluster`, with the services shared
/// with the model rather than copied for each guest.
pub struct Input {
    pub context: Context,
    pub services: Vec<Arc<Service>>,
    pub tls: Tls,
    /// Whether the services go with their endpoints. A guest that writes its `server` lines
    /// apart renders the rest from services without them, which an endpoint change leaves as
    /// they were.
    pub endpoints: bool,
    /// What of each service the guest reads.
    pub reads: Arc<Reads>,
}

/// What of each service a guest reads (its `description`): the annotations and labels, each
/// `None` for all of them, else keys, or prefixes ending in `*`; whether each endpoint's ports,
/// node, zone and pod; whether the service's ports. The default is all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reads {
    pub annotations: Option<Vec<String>>,
    pub labels: Option<Vec<String>>,
    pub endpoint_details: bool,
    pub ports: bool,
}

impl Default for Reads {
    fn default() -> Self {
        Reads {
            annotations: None,
            labels: None,
            endpoint_details: true,
            ports: true,
        }
    }
}

impl Reads {
    /// What `description` says the guest reads; all of it for a guest that cannot say.
    pub fn of(description: Option<&Description>) -> Reads {
        match description {
            Some(d) => Reads {
                annotations: d.annotations.clone(),
                labels: d.labels.clone(),
                endpoint_details: d.endpoint_details,
                ports: d.ports,
            },
            None => Reads::default(),
        }
    }
}

/// The pairs of `pairs` whose key `wanted` names (all of them when `None`).
fn read<'a>(pairs: &'a [(String, String)], wanted: Option<&[String]>) -> Vec<(&'a str, &'a str)> {
    let wanted = |key: &str| {
        wanted.is_none_or(|wanted| {
            wanted.iter().any(|w| match w.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == w,
            })
        })
    };
    (pairs.iter())
        .filter(|(key, _)| wanted(key))
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// A service as a guest receives it (the WIT record `service`): the model's, lowered without
/// being copied, with its endpoints or without.
#[derive(ComponentType, Lower, PartialEq)]
#[component(record)]
pub struct ServiceView<'a> {
    namespace: &'a str,
    name: &'a str,
    domains: &'a [String],
    proto: &'a str,
    ports: &'a [ServicePort],
    port: Option<&'a str>,
    #[component(name = "listen-port")]
    listen_port: Option<u16>,
    endpoints: Vec<EndpointView<'a>>,
    annotations: Vec<(&'a str, &'a str)>,
    labels: Vec<(&'a str, &'a str)>,
    #[component(name = "creation-time")]
    creation_time: Option<i64>,
}

/// An endpoint as a guest receives it (the WIT record `endpoint`): the model's, lowered without
/// being copied, with its details (ports, node, zone, pod) or without.
#[derive(ComponentType, Lower, PartialEq)]
#[component(record)]
pub struct EndpointView<'a> {
    address: &'a str,
    port: Option<u16>,
    ports: &'a [EndpointPort],
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<&'a str>,
    zone: Option<&'a str>,
    #[component(name = "target-pod")]
    target_pod: Option<&'a str>,
}

impl Endpoint {
    /// This endpoint as a guest receives it, with its details or without.
    fn view(&self, details: bool) -> EndpointView<'_> {
        EndpointView {
            address: &self.address,
            port: self.port,
            ports: if details { &self.ports } else { &[] },
            ready: self.ready,
            serving: self.serving,
            terminating: self.terminating,
            node: self.node.as_deref().filter(|_| details),
            zone: self.zone.as_deref().filter(|_| details),
            target_pod: self.target_pod.as_deref().filter(|_| details),
        }
    }
}

impl Service {
    /// How messages name it: `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// This service as a guest that reads `reads` receives it, with its endpoints or without.
    pub fn view(&self, endpoints: bool, reads: &Reads) -> ServiceView<'_> {
        ServiceView {
            namespace: &self.namespace,
            name: &self.name,
            domains: &self.domains,
            proto: &self.proto,
            ports: if reads.ports { &self.ports } else { &[] },
            port: self.port.as_deref().filter(|_| reads.ports),
            listen_port: self.listen_port,
            endpoints: match endpoints {
                true => (self.endpoints.iter())
                    .map(|e| e.view(reads.endpoint_details))
                    .collect(),
                false => Vec::new(),
            },
            annotations: read(&self.annotations, reads.annotations.as_deref()),
            labels: read(&self.labels, reads.labels.as_deref()),
            creation_time: self.creation_time,
        }
    }

    /// Whether a guest that reads `reads` receives `self` and `other` alike (the model shares
    /// unchanged services, so mostly one pointer is compared).
    pub fn same_to_guest(&self, other: &Service, endpoints: bool, reads: &Reads) -> bool {
        std::ptr::eq(self, other) || self.view(endpoints, reads) == other.view(endpoints, reads)
    }
}

/// The WIT record `cluster`, as [`Input`] lowers.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ClusterView<'a> {
    context: &'a Context,
    services: Vec<ServiceView<'a>>,
    tls: &'a Tls,
}

/// The `cluster` record of 0.2.0 and 0.1.0: no `tls`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct OlderClusterView<'a> {
    context: &'a Context,
    services: &'a [ServiceView<'a>],
}

impl Input {
    /// Whether `self` and `other` give a guest the same services and certificates (the model
    /// shares unchanged services, so most of the comparison is of pointers).
    pub fn same(&self, other: &Input) -> bool {
        self.endpoints == other.endpoints
            && self.reads == other.reads
            && self.tls == other.tls
            && self.services.len() == other.services.len()
            && (self.services.iter().zip(&other.services))
                .all(|(a, b)| a.same_to_guest(b, self.endpoints, &self.reads))
    }

    /// This input with `services` instead of its own.
    pub fn with(&self, services: Vec<Arc<Service>>) -> Input {
        Input {
            context: self.context.clone(),
            services,
            tls: self.tls.clone(),
            endpoints: self.endpoints,
            reads: self.reads.clone(),
        }
    }

    /// This input as a guest receives it.
    pub fn view(&self) -> ClusterView<'_> {
        ClusterView {
            context: &self.context,
            services: self
                .services
                .iter()
                .map(|s| s.view(self.endpoints, &self.reads))
                .collect(),
            tls: &self.tls,
        }
    }
}

impl ClusterView<'_> {
    /// This input as a guest built for 0.2.0 or 0.1.0 takes it: without the certificates.
    pub fn older(&self) -> OlderClusterView<'_> {
        OlderClusterView {
            context: self.context,
            services: &self.services,
        }
    }
}

/// The settings of an earlier version's description, as the current one has them.
macro_rules! settings_of {
    ($old:expr) => {
        ($old.settings).map(|settings| {
            (settings.into_iter())
                .map(|s| SettingInfo {
                    key: s.key,
                    help: s.help,
                })
                .collect()
        })
    };
}

impl From<v0_4::Description> for Description {
    fn from(old: v0_4::Description) -> Self {
        Description {
            settings: settings_of!(old),
            protos: old.protos,
            servers_apart: old.servers_apart,
            annotations: old.annotations,
            labels: old.labels,
            endpoint_details: old.endpoint_details,
            ports: true,
        }
    }
}

impl From<v0_3::Description> for Description {
    fn from(old: v0_3::Description) -> Self {
        Description {
            settings: settings_of!(old),
            protos: old.protos,
            servers_apart: old.servers_apart,
            annotations: None,
            labels: None,
            endpoint_details: true,
            ports: true,
        }
    }
}

impl From<v0_2::Description> for Description {
    fn from(old: v0_2::Description) -> Self {
        Description {
            settings: settings_of!(old),
            protos: old.protos,
            servers_apart: false,
            annotations: None,
            labels: None,
            endpoint_details: true,
            ports: true,
        }
    }
}

impl SectionKind {
    /// The keyword that starts a section of this kind.
    pub fn keyword(self) -> &'static str {
        match self {
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
}

impl SectionKind {
    /// A backend or listen section: one that has servers.
    pub fn has_servers(self) -> bool {
        matches!(self, SectionKind::Backend | SectionKind::Listen)
    }
}

/// The world guests are built for, as its WIT names it.
pub const WORLD: &str = "wasmconfd:haproxy/guest@0.5.0";

/// The earlier worlds this host still loads.
pub const WORLD_0_4: &str = "wasmconfd:haproxy/guest@0.4.0";
pub const WORLD_0_3: &str = "wasmconfd:haproxy/guest@0.3.0";
pub const WORLD_0_2: &str = "wasmconfd:haproxy/guest@0.2.0";
pub const WORLD_0_1: &str = "wasmconfd:haproxy/guest@0.1.0";

#[cfg(test)]
mod tests {
    #[test]
    fn the_world_names_are_the_ones_in_the_wit() {
        for (name, wit) in [
            (super::WORLD, include_str!("../../wit/world.wit")),
            (super::WORLD_0_4, include_str!("../../wit/0.4.0/world.wit")),
            (super::WORLD_0_3, include_str!("../../wit/0.3.0/world.wit")),
            (super::WORLD_0_2, include_str!("../../wit/0.2.0/world.wit")),
            (super::WORLD_0_1, include_str!("../../wit/0.1.0/world.wit")),
        ] {
            let (package, world) = name.split_once('/').unwrap();
            let (world, version) = world.split_once('@').unwrap();
            assert!(wit.contains(&format!("package {package}@{version};")));
            assert!(wit.contains(&format!("world {world} {{")));
        }
    }
}
