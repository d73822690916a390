//! Fixtures for testing guest logic natively with `cargo test`, no Wasm involved:
//!
//! ```
//! use wasmconfd_guest::testing::{cluster, service};
//!
//! let cluster = cluster([service("shop", "web", "http")
//!     .domain("shop.example.com")
//!     .endpoint("10.0.0.1", 8080, true)
//!     .build()]);
//! assert_eq!(cluster.services[0].ready_endpoints().count(), 1);
//! ```
//!
//! [`render`] renders a cluster as the host hands it to the guest: only the services of the
//! protos it declares, with only the annotations, labels, endpoint details and ports it reads.

use crate::{
    Certificate, Cluster, Context, Endpoint, EndpointPort, Fragment, Guest, Protocol, RenderError,
    Service, ServicePort, Tls,
};
#[cfg(not(target_arch = "wasm32"))]
use {crate::wit::wasmconfd::haproxy::host::Level, std::cell::RefCell};

/// A cluster with `services`, the host's default paths and no settings.
pub fn cluster(services: impl IntoIterator<Item = Service>) -> Cluster {
    Cluster {
        context: Context {
            maps_dir: "maps".into(),
            certs_dir: "certs".into(),
            settings: Vec::new(),
        },
        services: services.into_iter().collect(),
        tls: Tls {
            default_certificate: "certs/default.pem".into(),
            crt_list: "certs/certificates.crtlist".into(),
            certificates: Vec::new(),
        },
    }
}

/// Guest `G`'s render of `cluster` as the host hands it over: only the services of the protos
/// `G` declares (`describe`), each with only the annotations, labels, endpoint details and ports
/// it says it reads. A test through this fails, as the guest would once deployed, when it reads
/// an annotation or an endpoint's node, say, that it does not declare.
pub fn render<G: Guest>(mut cluster: Cluster) -> Result<Fragment, RenderError> {
    let description = G::describe();
    if let Some(protos) = &description.protos {
        cluster.services.retain(|s| protos.contains(&s.proto));
    }
    for service in &mut cluster.services {
        keep_read(&mut service.annotations, description.annotations.as_deref());
        keep_read(&mut service.labels, description.labels.as_deref());
        if !description.ports {
            service.ports.clear();
            service.port = None;
        }
        if !description.endpoint_details {
            for endpoint in &mut service.endpoints {
                endpoint.ports.clear();
                (endpoint.node, endpoint.zone, endpoint.target_pod) = (None, None, None);
            }
        }
    }
    G::render(cluster)
}

/// Keep the pairs whose key `wanted` names: a key, or a prefix ending in `*` (all when `None`).
fn keep_read(pairs: &mut Vec<(String, String)>, wanted: Option<&[String]>) {
    let Some(wanted) = wanted else {
        return;
    };
    pairs.retain(|(key, _)| {
        wanted.iter().any(|w| match w.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == w,
        })
    });
}

/// The same cluster with a certificate for `service` from its Secret `secret`, covering all of
/// its domains, as the host gives it.
pub fn with_certificate(mut cluster: Cluster, service: &Service, secret: &str) -> Cluster {
    cluster.tls.certificates.push(Certificate {
        namespace: service.namespace.clone(),
        secret: secret.into(),
        services: vec![service.name.clone()],
        domains: service.domains.clone(),
        sans: service.domains.clone(),
        subject: format!(
            "CN={}",
            service.domains.first().cloned().unwrap_or_default()
        ),
        issuer: "CN=test CA".into(),
        serial: "1".into(),
        not_before: 0,
        not_after: 4_102_444_800,
        key_type: "ecdsa-p256".into(),
        file: format!("certs/{}_{secret}.pem", service.namespace),
    });
    cluster
}

/// The same cluster with setting `key` = `value` added.
pub fn with_setting(mut cluster: Cluster, key: &str, value: &str) -> Cluster {
    cluster.context.settings.push((key.into(), value.into()));
    cluster.context.settings.sort();
    cluster
}

/// Start a service `namespace/name` with `proto` and one TCP port named `http` (80).
pub fn service(namespace: &str, name: &str, proto: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        namespace: namespace.into(),
        name: name.into(),
        domains: Vec::new(),
        proto: proto.into(),
        ports: vec![ServicePort {
            name: "http".into(),
            number: 80,
            protocol: Protocol::Tcp,
            app_protocol: None,
        }],
        port: Some("http".into()),
        listen_port: None,
        endpoints: Vec::new(),
        annotations: Vec::new(),
        labels: Vec::new(),
        creation_time: None,
    })
}

/// Builds a [`Service`] for tests.
pub struct ServiceBuilder(Service);

impl ServiceBuilder {
    /// Add a domain.
    pub fn domain(mut self, domain: &str) -> Self {
        self.0.domains.push(domain.into());
        self
    }

    /// Set `wasmconfd.io/listen-port`.
    pub fn listen_port(mut self, port: u16) -> Self {
        self.0.listen_port = Some(port);
        self
    }

    /// Add an endpoint serving the routed port on `port`.
    pub fn endpoint(mut self, address: &str, port: u16, ready: bool) -> Self {
        let name = self.0.port.clone().unwrap_or_default();
        self.0.endpoints.push(Endpoint {
            address: address.into(),
            port: Some(port),
            ports: vec![EndpointPort {
                name,
                number: port,
                protocol: Protocol::Tcp,
            }],
            ready,
            serving: ready,
            terminating: false,
            node: None,
            zone: None,
            target_pod: None,
        });
        self
    }

    /// Add an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.annotations.push((key.into(), value.into()));
        self
    }

    /// Add a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.push((key.into(), value.into()));
        self
    }

    /// Set the creation time (seconds since the epoch).
    pub fn created(mut self, seconds: i64) -> Self {
        self.0.creation_time = Some(seconds);
        self
    }

    /// The service.
    pub fn build(self) -> Service {
        self.0
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_log(level: Level, message: &str) {
    eprintln!("{level:?}: {message}");
    LOGS.with(|logs| logs.borrow_mut().push((level, message.to_string())));
}

#[cfg(not(target_arch = "wasm32"))]
/// The messages this thread's guest code logged since the last call, as `(level, message)`.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()))
}
