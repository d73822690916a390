//! The routed objects (Services, EndpointSlices, legacy Endpoints) as wasmconfd keeps them: only
//! what the model, the Events and snapshots read, in types of our own. Kubernetes' types hold
//! every field of the API, nearly all of them empty: a Service is 824 bytes before any of its
//! strings, and a map of one label takes 544. At 10,000 services they were most of the memory.
//!
//! A snapshot's objects are read straight into these types (their `Deserialize`), skipping what
//! is not kept; the watch's come as Kubernetes' types and are converted (`From`). Both read a
//! field that is `null` or missing as Kubernetes' types do, as its default.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Text that is read once and never changed.
pub type Text = Box<str>;

/// `text` as a `String`, for Kubernetes' types and the model's.
pub fn owned(text: &Option<Text>) -> Option<String> {
    text.as_deref().map(str::to_string)
}

/// What is kept of an object's metadata.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub namespace: Option<Text>,
    pub name: Option<Text>,
    pub uid: Option<Text>,
    pub resource_version: Option<Text>,
    #[serde(rename = "creationTimestamp")]
    pub created: Option<Time>,
    #[serde(default, deserialize_with = "Pairs::read")]
    pub labels: Pairs,
    /// Without kubectl's last-applied annotation (a copy of the whole object).
    #[serde(default, deserialize_with = "Pairs::read_annotations")]
    pub annotations: Pairs,
}

impl Meta {
    /// The namespace and name, empty when missing.
    pub fn key(&self) -> (&str, &str) {
        let (namespace, name) = (self.namespace.as_deref(), self.name.as_deref());
        (namespace.unwrap_or_default(), name.unwrap_or_default())
    }
}

/// Labels or annotations, sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pairs(Box<[(Text, Text)]>);

impl Pairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        let found = self.0.binary_search_by(|(k, _)| (**k).cmp(key));
        found.ok().map(|i| &*self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    fn from_map(map: Option<BTreeMap<String, String>>) -> Pairs {
        let pairs = map.into_iter().flatten();
        Pairs(pairs.map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// A JSON object of strings (or `null`), sorted by key; of a key given twice, the last.
    fn read<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Pairs, D::Error> {
        let Some(PairList(mut pairs)) = Option::deserialize(deserializer)? else {
            return Ok(Pairs::default());
        };
        // A stable sort: of equal keys, the last given comes last, and is the one kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Ok(Pairs(pairs.into()))
    }

    /// Annotations, as [`Pairs::read`] reads them, without kubectl's last-applied one.
    fn read_annotations<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Pairs, D::Error> {
        let mut pairs = Pairs::read(deserializer)?.0.into_vec();
        pairs.retain(|(key, _)| &**key != super::LAST_APPLIED);
        Ok(Pairs(pairs.into()))
    }

    fn to_map(&self) -> Option<BTreeMap<String, String>> {
        let map = self.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        (!self.0.is_empty()).then(|| map.collect())
    }
}

impl From<ObjectMeta> for Meta {
    fn from(mut meta: ObjectMeta) -> Meta {
        super::kubernetes::slim_meta(&mut meta);
        Meta {
            namespace: meta.namespace.map(Into::into),
            name: meta.name.map(Into::into),
            uid: meta.uid.map(Into::into),
            resource_version: meta.resource_version.map(Into::into),
            created: meta.creation_timestamp,
            labels: Pairs::from_map(meta.labels),
            annotations: Pairs::from_map(meta.annotations),
        }
    }
}

impl Meta {
    fn to_meta(&self) -> ObjectMeta {
        ObjectMeta {
            namespace: owned(&self.namespace),
            name: owned(&self.name),
            uid: owned(&self.uid),
            resource_version: owned(&self.resource_version),
            creation_timestamp: self.created.clone(),
            labels: self.labels.to_map(),
            annotations: self.annotations.to_map(),
            ..ObjectMeta::default()
        }
    }

    /// A reference to the object, for an Event on it.
    pub fn reference(&self, api_version: &str, kind: &str) -> core::ObjectReference {
        core::ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            namespace: owned(&self.namespace),
            name: owned(&self.name),
            uid: owned(&self.uid),
            resource_version: owned(&self.resource_version),
            field_path: None,
        }
    }
}

/// The pairs of a JSON object of strings, in the order given.
struct PairList(Vec<(Text, Text)>);

impl<'de> Deserialize<'de> for PairList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PairList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A>(self, mut map: A) -> Result<PairList, A::Error>
            where
                A: serde::de::MapAccess<'de>,
            {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(PairList(pairs))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A port of a Service or of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub name: Option<Text>,
    #[serde(rename = "port")]
    pub number: Option<i32>,
    pub protocol: Option<Text>,
    pub app_protocol: Option<Text>,
}

/// A Service: its metadata and the ports of its spec.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(from = "ServiceJson")]
pub struct Service {
    pub meta: Meta,
    pub ports: Box<[Port]>,
}

/// A Service as JSON has it, reading only what is kept.
#[derive(Deserialize)]
struct ServiceJson {
    metadata: Option<Meta>,
    spec: Option<ServiceSpecJson>,
}

#[derive(Deserialize)]
struct ServiceSpecJson {
    ports: Option<Vec<Port>>,
}

impl From<ServiceJson> for Service {
    fn from(json: ServiceJson) -> Service {
        let ports = json.spec.and_then(|spec| spec.ports).into_iter().flatten();
        Service {
            meta: json.metadata.unwrap_or_default(),
            // A Service's port is required: Kubernetes' type reads a missing one as 0.
            ports: ports
                .map(|port| Port {
                    number: Some(port.number.unwrap_or_default()),
                    ..port
                })
                .collect(),
        }
    }
}

impl From<core::Service> for Service {
    fn from(service: core::Service) -> Service {
        let ports = service
            .spec
            .and_then(|spec| spec.ports)
            .into_iter()
            .flatten();
        Service {
            meta: service.metadata.into(),
            ports: ports
                .map(|p| Port {
                    name: p.name.map(Into::into),
                    number: Some(p.port),
                    protocol: p.protocol.map(Into::into),
                    app_protocol: p.app_protocol.map(Into::into),
                })
                .collect(),
        }
    }
}

impl From<&Service> for core::Service {
    fn from(service: &Service) -> core::Service {
        let ports = service.ports.iter().map(|p| core::ServicePort {
            name: owned(&p.name),
            port: p.number.unwrap_or_default(),
            protocol: owned(&p.protocol),
            app_protocol: owned(&p.app_protocol),
            ..core::ServicePort::default()
        });
        core::Service {
            metadata: service.meta.to_meta(),
            spec: Some(core::ServiceSpec {
                ports: Some(ports.collect()),
                ..core::ServiceSpec::default()
            }),
            status: None,
        }
    }
}

/// An EndpointSlice.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(from = "EndpointSliceJson")]
pub struct EndpointSlice {
    pub meta: Meta,
    pub address_type: Text,
    pub ports: Box<[Port]>,
    pub endpoints: Box<[Endpoint]>,
}

/// An endpoint of an EndpointSlice: its addresses, conditions, node, zone, and the Pod it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoint {
    pub addresses: Box<[Text]>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node: Option<Text>,
    pub zone: Option<Text>,
    /// The name of the Pod its target reference names; none when it names another kind.
    pub pod: Option<Text>,
}

/// An EndpointSlice as JSON has it, reading only what is kept.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointSliceJson {
    metadata: Option<Meta>,
    address_type: Option<Text>,
    ports: Option<Vec<Port>>,
    endpoints: Option<Vec<EndpointJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointJson {
    addresses: Option<Vec<Text>>,
    conditions: Option<ConditionsJson>,
    node_name: Option<Text>,
    zone: Option<Text>,
    target_ref: Option<TargetJson>,
}

#[derive(Deserialize, Default)]
struct ConditionsJson {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
struct TargetJson {
    kind: Option<Text>,
    name: Option<Text>,
}

impl From<EndpointSliceJson> for EndpointSlice {
    fn from(json: EndpointSliceJson) -> EndpointSlice {
        let endpoints = json.endpoints.into_iter().flatten().map(|e| {
            let conditions = e.conditions.unwrap_or_default();
            let target = e.target_ref.filter(|t| t.kind.as_deref() == Some("Pod"));
            Endpoint {
                addresses: e.addresses.unwrap_or_default().into(),
                ready: conditions.ready,
                serving: conditions.serving,
                terminating: conditions.terminating,
                node: e.node_name,
                zone: e.zone,
                pod: target.and_then(|t| t.name),
            }
        });
        EndpointSlice {
            meta: json.metadata.unwrap_or_default(),
            address_type: json.address_type.unwrap_or_default(),
            ports: json.ports.unwrap_or_default().into(),
            endpoints: endpoints.collect(),
        }
    }
}

impl From<discovery::EndpointSlice> for EndpointSlice {
    fn from(slice: discovery::EndpointSlice) -> EndpointSlice {
        let ports = slice.ports.into_iter().flatten().map(|p| Port {
            name: p.name.map(Into::into),
            number: p.port,
            protocol: p.protocol.map(Into::into),
            app_protocol: p.app_protocol.map(Into::into),
        });
        let endpoints = slice.endpoints.into_iter().map(|e| {
            let conditions = e.conditions.unwrap_or_default();
            let target = e.target_ref.filter(|t| t.kind.as_deref() == Some("Pod"));
            Endpoint {
                addresses: e.addresses.into_iter().map(Into::into).collect(),
                ready: conditions.ready,
                serving: conditions.serving,
                terminating: conditions.terminating,
                node: e.node_name.map(Into::into),
                zone: e.zone.map(Into::into),
                pod: target.and_then(|t| t.name).map(Into::into),
            }
        });
        EndpointSlice {
            meta: slice.metadata.into(),
            address_type: slice.address_type.into(),
            ports: ports.collect(),
            endpoints: endpoints.collect(),
        }
    }
}

impl From<&EndpointSlice> for discovery::EndpointSlice {
    fn from(slice: &EndpointSlice) -> discovery::EndpointSlice {
        let ports = slice.ports.iter().map(|p| discovery::EndpointPort {
            name: owned(&p.name),
            port: p.number,
            protocol: owned(&p.protocol),
            app_protocol: owned(&p.app_protocol),
        });
        let endpoints = slice.endpoints.iter().map(|e| discovery::Endpoint {
            addresses: e.addresses.iter().map(|a| a.to_string()).collect(),
            conditions: Some(discovery::EndpointConditions {
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
            }),
            node_name: owned(&e.node),
            zone: owned(&e.zone),
            target_ref: e.pod.as_ref().map(|pod| core::ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.to_string()),
                ..core::ObjectReference::default()
            }),
            ..discovery::Endpoint::default()
        });
        discovery::EndpointSlice {
            metadata: slice.meta.to_meta(),
            address_type: slice.address_type.to_string(),
            ports: Some(ports.collect()),
            endpoints: endpoints.collect(),
        }
    }
}

/// A legacy v1 Endpoints object: its metadata and its subsets as Kubernetes has them (few
/// clusters still route by these).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(from = "EndpointsJson")]
pub struct Endpoints {
    pub meta: Meta,
    pub subsets: Vec<core::EndpointSubset>,
}

#[derive(Deserialize)]
struct EndpointsJson {
    metadata: Option<Meta>,
    subsets: Option<Vec<core::EndpointSubset>>,
}

impl From<EndpointsJson> for Endpoints {
    fn from(json: EndpointsJson) -> Endpoints {
        Endpoints {
            meta: json.metadata.unwrap_or_default(),
            subsets: json.subsets.unwrap_or_default(),
        }
    }
}

impl From<core::Endpoints> for Endpoints {
    fn from(endpoints: core::Endpoints) -> Endpoints {
        Endpoints {
            meta: endpoints.metadata.into(),
            subsets: endpoints.subsets.unwrap_or_default(),
        }
    }
}

impl From<&Endpoints> for core::Endpoints {
    fn from(endpoints: &Endpoints) -> core::Endpoints {
        core::Endpoints {
            metadata: endpoints.meta.to_meta(),
            subsets: Some(endpoints.subsets.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::LAST_APPLIED;

    #[test]
    fn what_is_kept_reads_back_as_the_kubernetes_object_it_came_from() {
        let yaml = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
                    metadata: {name: web-1, namespace: shop, uid: u-1, resourceVersion: '7', \
                    creationTimestamp: '2026-01-01T00:00:00Z', labels: {kubernetes.io/service-name: web}}\n\
                    ports: [{name: http, port: 8080, protocol: TCP}]\n\
                    endpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: true}\n  nodeName: n1\n  \
                    zone: z1\n  targetRef: {kind: Pod, name: web-0}\n";
        let original: discovery::EndpointSlice = serde_yaml::from_str(yaml).unwrap();
        let kept = EndpointSlice::from(original.clone());
        assert_eq!(
            kept.meta.labels.get("kubernetes.io/service-name"),
            Some("web")
        );
        assert_eq!(kept.endpoints[0].pod.as_deref(), Some("web-0"));
        let back = discovery::EndpointSlice::from(&kept);
        assert_eq!(back.metadata, original.metadata);
        assert_eq!(back.ports, original.ports);
        assert_eq!(back.endpoints[0].addresses, original.endpoints[0].addresses);
        assert_eq!(EndpointSlice::from(back), kept);
    }

    /// What a snapshot reads straight into the kept type is what the watch keeps of the same
    /// object read as Kubernetes' type: for every field kept, and for `null`, missing and
    /// mistyped ones.
    #[test]
    fn a_snapshot_object_is_kept_as_the_watch_keeps_it() {
        fn alike<K, T>(json: &str)
        where
            K: for<'de> Deserialize<'de> + From<T> + PartialEq + std::fmt::Debug,
            T: for<'de> Deserialize<'de>,
        {
            let direct = serde_json::from_str::<K>(json);
            let converted = serde_json::from_str::<T>(json).map(K::from);
            match (direct, converted) {
                (Ok(direct), Ok(converted)) => assert_eq!(direct, converted, "{json}"),
                (Err(_), Err(_)) => {}
                (direct, converted) => panic!("{json}:\n{direct:?}\n{converted:?}"),
            }
        }
        let meta = r#""metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
            "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"b": "2", "a": "1", "a": "3"}, "managedFields": [{"manager": "x"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                            "wasmconfd.io/proto": "http"}}"#;
        for service in [
            format!(
                r#"{{"apiVersion": "v1", "kind": "Service", {meta}, "spec": {{"selector": {{"a": "b"}},
                "ports": [{{"name": "http", "port": 80, "protocol": "TCP", "appProtocol": "h2c",
                "targetPort": 8080}}, {{"port": 81}}, {{"name": null}}]}}, "status": {{}}}}"#
            ),
            r#"{"metadata": null, "spec": null}"#.into(),
            r#"{"metadata": {"labels": null, "annotations": {}}, "spec": {"ports": null}}"#.into(),
            r#"{}"#.into(),
            r#"{"spec": {"ports": "80"}}"#.into(),
            r#"{"metadata": {"labels": {"a": 1}}}"#.into(),
            r#"{"metadata": {"creationTimestamp": "yesterday"}}"#.into(),
        ] {
            alike::<Service, core::Service>(&service);
        }
        for slice in [
            format!(
                r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", {meta},
                "addressType": "IPv4", "ports": [{{"name": "http", "port": 8080, "protocol": "TCP"}}],
                "endpoints": [{{"addresses": ["10.0.0.1"], "conditions": {{"ready": true,
                "serving": false}}, "nodeName": "n1", "zone": "z1", "hints": {{}},
                "targetRef": {{"kind": "Pod", "name": "web-0", "namespace": "shop"}}}},
                {{"addresses": ["10.0.0.2", "10.0.0.3"], "conditions": null, "zone": null,
                "targetRef": {{"kind": "Node", "name": "n2"}}}}]}}"#
            ),
            r#"{"metadata": null, "addressType": null, "ports": null, "endpoints": null}"#.into(),
            r#"{"endpoints": [{"addresses": null}, {}], "ports": [{"port": null}]}"#.into(),
            r#"{"endpoints": [{"addresses": "10.0.0.1"}]}"#.into(),
            r#"{"endpoints": {}}"#.into(),
        ] {
            alike::<EndpointSlice, discovery::EndpointSlice>(&slice);
        }
        for endpoints in [
            format!(
                r#"{{"kind": "Endpoints", {meta}, "subsets": [{{"addresses": [{{"ip": "10.0.0.1"}}],
                "ports": [{{"port": 80}}]}}]}}"#
            ),
            r#"{"subsets": null}"#.into(),
            r#"{"subsets": [{"addresses": [{"ip": 1}]}]}"#.into(),
        ] {
            alike::<Endpoints, core::Endpoints>(&endpoints);
        }
    }

    #[test]
    fn kubectl_s_copy_of_the_object_is_not_kept() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    \
                    kubectl.kubernetes.io/last-applied-configuration: '{}'\n    b: '2'\n    a: '1'\n\
                    spec: {ports: [{port: 80, appProtocol: http}]}\n";
        let service = Service::from(serde_yaml::from_str::<core::Service>(yaml).unwrap());
        assert_eq!(
            service.meta.annotations.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "2")]
        );
        assert_eq!(service.meta.annotations.get(LAST_APPLIED), None);
        assert_eq!(service.ports[0].number, Some(80));
        assert_eq!(service.ports[0].app_protocol.as_deref(), Some("http"));
    }
}
