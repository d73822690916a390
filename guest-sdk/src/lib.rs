//! Write wasmconfd guests in Rust.
//!
//! A guest turns the cluster model into part of an HAProxy configuration. Implement [`Guest`] and
//! export it; build with `cargo build --target wasm32-wasip2`:
//!
//! ```no_run
//! use wasmconfd_guest::{Cluster, Fragment, Guest, RenderError, Section};
//!
//! struct Hello;
//!
//! impl Guest for Hello {
//!     fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
//!         let mut fragment = Fragment::default();
//!         for service in cluster.services_with_proto("hello") {
//!             let mut backend = Section::backend(wasmconfd_guest::backend_name("hello", service));
//!             backend.extend(wasmconfd_guest::servers(service));
//!             fragment.sections.push(backend);
//!         }
//!         Ok(fragment)
//!     }
//! }
//!
//! wasmconfd_guest::export!(Hello);
//! ```
//!
//! The host quotes every argument, so values from the cluster can be passed as they are. The
//! [`testing`] module builds clusters so guest logic is unit-tested natively with `cargo test`.

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "guest",
        pub_export_macro: true,
        default_bindings_module: "wasmconfd_guest::wit",
        export_macro_name: "export_world",
    });
}

#[doc(hidden)]
pub use wit_bindgen;

pub use wit::wasmconfd::haproxy::types::{
    Certificate, Cluster, Context, Description, Directive, Endpoint, EndpointPort, Fragment,
    MapEntry, MapFile, Placement, Protocol, RenderError, Section, SectionKind, Service,
    ServicePort, SettingError, SettingInfo, Tls,
};

/// A guest: what it says about itself, and how it renders.
pub trait Guest {
    /// The protos of the services it renders, the settings it reads, and the annotations,
    /// labels, endpoint details and ports it reads; the host hands it only services of those
    /// protos with those annotations, labels, details and ports, and refuses a setting given
    /// that it does not read. By default it says nothing: it receives every service its
    /// operator's scope admits, with every annotation, label, endpoint detail and port.
    fn describe() -> Description {
        Description {
            protos: None,
            settings: None,
            servers_apart: false,
            annotations: None,
            labels: None,
            endpoint_details: true,
            ports: true,
        }
    }

    /// Render the part of the HAProxy configuration this guest is responsible for.
    fn render(cluster: Cluster) -> Result<Fragment, RenderError>;

    /// The `server` lines of each service, for a guest whose description says
    /// `servers_apart` ([`Description::with_servers_apart`]): its `render` then receives the
    /// services without endpoints, and this only the services whose endpoints changed. One
    /// list of placements per service, in order.
    fn servers(
        context: Context,
        services: Vec<Service>,
    ) -> Result<Vec<Vec<Placement>>, RenderError> {
        let _ = (context, services);
        Err(RenderError::Other(
            "this guest does not write servers apart".into(),
        ))
    }
}

/// Export `$guest` (a type implementing [`Guest`]) as the guest component's implementation.
#[macro_export]
macro_rules! export {
    ($guest:ty) => {
        #[doc(hidden)]
        struct __WasmconfdGuest;

        impl $crate::wit::Guest for __WasmconfdGuest {
            fn describe() -> $crate::Description {
                <$guest as $crate::Guest>::describe()
            }

            fn render(cluster: $crate::Cluster) -> Result<$crate::Fragment, $crate::RenderError> {
                <$guest as $crate::Guest>::render(cluster)
            }

            fn servers(
                context: $crate::Context,
                services: Vec<$crate::Service>,
            ) -> Result<Vec<Vec<$crate::Placement>>, $crate::RenderError> {
                <$guest as $crate::Guest>::servers(context, services)
            }
        }

        $crate::wit::export_world!(__WasmconfdGuest with_types_in $crate::wit);
    };
}

impl Description {
    /// A guest of the services of `protos` that reads `settings`, as (key, what it does), and
    /// every annotation and label ([`Description::reading`] says which), endpoint detail
    /// ([`Description::without_endpoint_details`] says it reads none) and port
    /// ([`Description::without_ports`]).
    pub fn new<'a>(
        protos: impl IntoIterator<Item = &'a str>,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut settings: Vec<SettingInfo> = settings
            .into_iter()
            .map(|(key, help)| SettingInfo {
                key: key.into(),
                help: help.into(),
            })
            .collect();
        settings.sort_by(|a, b| a.key.cmp(&b.key));
        Description {
            protos: Some(protos.into_iter().map(String::from).collect()),
            settings: Some(settings),
            servers_apart: false,
            annotations: None,
            labels: None,
            endpoint_details: true,
            ports: true,
        }
    }

    /// The same guest, reading only the annotations and the labels named: each a key, or a
    /// prefix ending in `*` (`wasmconfd.io/*`). Its services then carry only those, which makes
    /// each call cheaper, and a change to any other does not run it again.
    pub fn reading<'a>(
        mut self,
        annotations: impl IntoIterator<Item = &'a str>,
        labels: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.annotations = Some(annotations.into_iter().map(String::from).collect());
        self.labels = Some(labels.into_iter().map(String::from).collect());
        self
    }

    /// The same guest, not reading each endpoint's `ports`, `node`, `zone` and `target_pod`:
    /// they arrive empty and `None` (its address, port and conditions still arrive), which makes
    /// each call cheaper, and a change to them alone does not run it again.
    pub fn without_endpoint_details(mut self) -> Self {
        self.endpoint_details = false;
        self
    }

    /// The same guest, not reading each service's `ports` and `port`: they arrive empty and
    /// `None` (each endpoint's `port` still arrives), which makes each call cheaper, and a change
    /// to them alone does not run it again.
    pub fn without_ports(mut self) -> Self {
        self.ports = false;
        self
    }

    /// The same guest, writing `server` lines apart ([`Guest::servers`]).
    pub fn with_servers_apart(mut self) -> Self {
        self.servers_apart = true;
        self
    }
}

/// The placement of `service`'s `server` lines ([`servers`]) into its backend `backend`.
pub fn placement(backend: impl Into<String>, service: &Service) -> Placement {
    Placement {
        section: backend.into(),
        servers: servers(service),
    }
}

/// [`Guest::servers`] of a guest that gives each service of `proto` with a domain one backend,
/// named [`backend_name`]`(proto, service)`, as the bundled http and https guests do: that
/// service's servers into it, and nothing for the others.
pub fn servers_by_domain(proto: &str, services: &[Service]) -> Vec<Vec<Placement>> {
    services
        .iter()
        .map(|service| {
            if service.proto == proto && !service.domains.is_empty() {
                vec![placement(backend_name(proto, service), service)]
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// A backend answering every request with `404` and `message`, for hosts nothing routes.
pub fn not_found_backend(name: impl Into<String>, message: &str) -> Section {
    Section::backend(name).with(
        "http-request",
        [
            "return",
            "status",
            "404",
            "content-type",
            "text/plain",
            "string",
            message,
        ],
    )
}

pub mod log;
mod one_call;
pub mod testing;

pub use one_call::OneCallAllocator;

impl Cluster {
    /// This guest's setting `key`, if the host's guest configuration has one.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.context
            .settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The setting `key`, or `default` when it is not set.
    pub fn setting_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.setting(key).unwrap_or(default)
    }

    /// The setting `key` parsed as `T`, or `default` when it is not set; a value that does not
    /// parse is an [`RenderError::InvalidSetting`] that names the key.
    pub fn parsed_setting<T: std::str::FromStr>(
        &self,
        key: &str,
        default: T,
    ) -> Result<T, RenderError> {
        match self.setting(key) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| {
                invalid_setting(
                    key,
                    &format!("`{value}` is not a valid {}", std::any::type_name::<T>()),
                )
            }),
        }
    }

    /// The services whose proto is `proto`.
    pub fn services_with_proto<'a>(&'a self, proto: &'a str) -> impl Iterator<Item = &'a Service> {
        self.services.iter().filter(move |s| s.proto == proto)
    }

    /// The certificate of `service` (from its `wasmconfd.io/tls-secret`), when the host holds a
    /// good one for it.
    pub fn certificate_of(&self, service: &Service) -> Option<&Certificate> {
        self.tls
            .certificates
            .iter()
            .find(|c| c.namespace == service.namespace && c.services.contains(&service.name))
    }

    /// A path inside the host's maps directory, for use in `map_*()` converters.
    pub fn map_path(&self, file: &str) -> String {
        format!("{}/{file}", self.context.maps_dir)
    }
}

/// A [`RenderError::InvalidSetting`] for `key`.
pub fn invalid_setting(key: &str, reason: &str) -> RenderError {
    RenderError::InvalidSetting(SettingError {
        key: key.to_string(),
        reason: reason.to_string(),
    })
}

impl Service {
    /// `namespace/name`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        lookup(&self.annotations, key)
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(&self.labels, key)
    }

    /// Endpoints that are ready and serve the routed port, as `(address, port)`.
    pub fn ready_endpoints(&self) -> impl Iterator<Item = (&str, u16)> {
        self.endpoints
            .iter()
            .filter(|e| e.ready)
            .filter_map(|e| Some((e.address.as_str(), e.port?)))
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Routing by domain, as the bundled http and https guests do: exact names in one map file and
/// `*.` wildcards, by suffix, in another, each domain to the backend of the first service that
/// claims it (the host already gives a domain to one service per proto; two services of one
/// proto share one only under different `wasmconfd.io/path`s, which these maps do not route by).
pub struct DomainRoutes {
    exact: MapFile,
    wildcards: MapFile,
    owners: std::collections::HashMap<String, String>,
    routes_by: &'static str,
}

impl DomainRoutes {
    /// Routes into the map files `exact` and `wildcards`; `routes_by` says what the guest looks
    /// up (`host`, `server name`), for messages.
    pub fn new(exact: &str, wildcards: &str, routes_by: &'static str) -> Self {
        DomainRoutes {
            exact: MapFile::new(exact),
            wildcards: MapFile::new(wildcards),
            owners: Default::default(),
            routes_by,
        }
    }

    /// Route `service`'s domains to `backend`; a domain already routed stays with its first
    /// backend, with a warning.
    pub fn add(&mut self, service: &Service, backend: &str) {
        for domain in &service.domains {
            if let Some(owner) = self.owners.get(domain) {
                log::warn(&format!(
                    "service {}: domain {domain} is already routed to {owner} (this guest routes \
                     by {} only, not by path): skipped",
                    service.id(),
                    self.routes_by
                ));
                continue;
            }
            self.owners.insert(domain.clone(), backend.to_string());
            match domain.strip_prefix('*') {
                Some(suffix) => self.wildcards.push(suffix, backend),
                None => self.exact.push(domain, backend),
            }
        }
    }

    /// The two map files: exact names, then wildcards with the longest suffix first.
    pub fn into_maps(mut self) -> Vec<MapFile> {
        self.wildcards.sort_longest_first();
        vec![self.exact, self.wildcards]
    }
}

/// A backend name for `service` that is unique per prefix and valid for HAProxy:
/// `<prefix>_<namespace>_<name>` (Kubernetes names contain no `_`).
pub fn backend_name(prefix: &str, service: &Service) -> String {
    format!("{prefix}_{}_{}", service.namespace, service.name)
}

/// `address:port`, with brackets around an IPv6 address.
pub fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// One `server` line per ready endpoint, with health checks on. A server is named after its
/// address and port, so its name stays the same across renders for as long as the endpoint
/// lives.
pub fn servers(service: &Service) -> Vec<Directive> {
    service
        .ready_endpoints()
        .map(|(address, port)| {
            let name = format!("{address}:{port}");
            // The address is the name but for an IPv6 one, which takes brackets.
            let address = match address.contains(':') {
                true => host_port(address, port),
                false => name.clone(),
            };
            Directive::new("server", [name, address, "check".into()])
        })
        .collect()
}

/// Directive arguments of mixed types (`&str`, `String`, `&String`) as one `Vec<String>`:
/// `section.with("http-request", args!["set-var(txn.route)", format!("base,map_beg({map})")])`.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        ::std::vec![$(::std::string::String::from($arg)),*]
    };
}

/// Log a formatted warning through the host: `warn!("service {} skipped", service.id())`.
#[macro_export]
macro_rules! warn {
    ($($format:tt)*) => {
        $crate::log::warn(&::std::format!($($format)*))
    };
}

/// Log formatted information through the host.
#[macro_export]
macro_rules! info {
    ($($format:tt)*) => {
        $crate::log::info(&::std::format!($($format)*))
    };
}

impl Directive {
    /// `keyword args...`.
    pub fn new(keyword: &str, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Directive {
            keyword: keyword.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            comment: None,
        }
    }

    /// The same directive with a comment after it.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

impl Section {
    /// A section of `kind`, optionally named, with no directives.
    pub fn new(kind: SectionKind, name: Option<String>) -> Self {
        Section {
            kind,
            name,
            directives: Vec::new(),
        }
    }

    /// `global`.
    pub fn global() -> Self {
        Self::new(SectionKind::Global, None)
    }

    /// `defaults`, unnamed.
    pub fn defaults() -> Self {
        Self::new(SectionKind::Defaults, None)
    }

    /// `frontend NAME`.
    pub fn frontend(name: impl Into<String>) -> Self {
        Self::new(SectionKind::Frontend, Some(name.into()))
    }

    /// `backend NAME`.
    pub fn backend(name: impl Into<String>) -> Self {
        Self::new(SectionKind::Backend, Some(name.into()))
    }

    /// `listen NAME`.
    pub fn listen(name: impl Into<String>) -> Self {
        Self::new(SectionKind::Listen, Some(name.into()))
    }

    /// Append `keyword args...`, builder style.
    pub fn with(
        mut self,
        keyword: &str,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.push(keyword, args);
        self
    }

    /// Append `keyword args...`.
    pub fn push(&mut self, keyword: &str, args: impl IntoIterator<Item = impl Into<String>>) {
        self.directives.push(Directive::new(keyword, args));
    }

    /// Append directives.
    pub fn extend(&mut self, directives: impl IntoIterator<Item = Directive>) {
        self.directives.extend(directives);
    }
}

impl Default for Fragment {
    /// No sections and no map files.
    fn default() -> Self {
        Fragment {
            sections: Vec::new(),
            maps: Vec::new(),
        }
    }
}

impl MapFile {
    /// An empty map file named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapFile {
            name: name.into(),
            entries: Vec::new(),
        }
    }

    /// Append `key value`.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.push(MapEntry {
            key: key.into(),
            value: value.into(),
        });
    }

    /// Put longer keys first (equal lengths by key). Lookups such as `map_end` and `map_beg`
    /// take the first entry that matches, so `.shop.example.com` must come before
    /// `.example.com` for the more specific one to win.
    pub fn sort_longest_first(&mut self) {
        self.entries
            .sort_by(|a, b| b.key.len().cmp(&a.key.len()).then(a.key.cmp(&b.key)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{service, take_logs};

    #[test]
    fn a_server_is_named_after_its_address_and_port_and_an_ipv6_one_has_brackets() {
        let web = service("ns", "web", "http")
            .endpoint("10.0.0.1", 8080, true)
            .endpoint("fd00::1", 8080, true)
            .endpoint("10.0.0.2", 8080, false)
            .build();
        let lines: Vec<_> = servers(&web).into_iter().map(|d| d.args).collect();
        assert_eq!(
            lines,
            [
                ["10.0.0.1:8080", "10.0.0.1:8080", "check"],
                ["fd00::1:8080", "[fd00::1]:8080", "check"],
            ]
        );
    }

    /// A guest of proto `web` that reads the annotations `mine/*` and the label `tier`, no
    /// endpoint details and no ports, and says what it receives in one section per service.
    struct Reader;

    impl Guest for Reader {
        fn describe() -> Description {
            Description::new(["web"], [])
                .reading(["mine/*"], ["tier"])
                .without_endpoint_details()
                .without_ports()
        }

        fn render(cluster: Cluster) -> Result<Fragment, RenderError> {
            let keys = |pairs: &[(String, String)]| {
                pairs
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let sections = (cluster.services.iter())
                .map(|s| {
                    let nodes = (s.endpoints.iter())
                        .map(|e| format!("{}@{}", e.address, e.node.as_deref().unwrap_or("-")));
                    let port = s.port.as_deref().unwrap_or("-");
                    let ports = format!("ports={} port={port}", s.ports.len());
                    let seen = [keys(&s.annotations), keys(&s.labels), ports]
                        .into_iter()
                        .chain(nodes);
                    Section::backend(s.name.clone()).with("describe", seen)
                })
                .collect();
            Ok(Fragment {
                sections,
                maps: Vec::new(),
            })
        }
    }

    #[test]
    fn testing_render_hands_the_guest_what_the_host_would() {
        let mut web = service("a", "web", "web")
            .annotation("mine/x", "1")
            .annotation("theirs/y", "2")
            .label("tier", "front")
            .label("app", "web")
            .endpoint("10.0.0.1", 8080, true)
            .build();
        web.endpoints[0].node = Some("node-1".into());
        let other = service("a", "db", "redis").build();
        let out = testing::render::<Reader>(testing::cluster([web, other])).unwrap();
        assert_eq!(out.sections.len(), 1, "only the services of its protos");
        assert_eq!(
            out.sections[0].directives[0].args,
            ["mine/x", "tier", "ports=0 port=-", "10.0.0.1@-"],
            "its annotations and labels, no ports, and its endpoint without the node"
        );
    }

    #[test]
    fn domain_routes_split_exact_and_wildcard_names_and_keep_the_first_claim() {
        let mut routes = DomainRoutes::new("hosts.map", "wildcards.map", "host");
        let shop = service("a", "shop", "http")
            .domain("shop.example.com")
            .domain("*.example.com")
            .build();
        let deeper = service("a", "deeper", "http")
            .domain("*.eu.example.com")
            .domain("shop.example.com")
            .build();
        routes.add(&shop, "be_shop");
        routes.add(&deeper, "be_deeper");
        let maps = routes.into_maps();
        let entries = |map: &MapFile| -> Vec<(String, String)> {
            map.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        };
        assert_eq!(maps[0].name, "hosts.map");
        assert_eq!(
            entries(&maps[0]),
            [("shop.example.com".into(), "be_shop".into())]
        );
        assert_eq!(
            entries(&maps[1]),
            [
                (".eu.example.com".into(), "be_deeper".into()),
                (".example.com".into(), "be_shop".into())
            ],
            "the longer suffix first"
        );
        let logs = take_logs();
        assert!(
            logs.iter().any(|(_, m)| m.contains("a/deeper")
                && m.contains("already routed to be_shop")
                && m.contains("routes by host only")),
            "{logs:?}"
        );
    }
}
