//! The routed objects (Services, EndpointSlices, legacy Endpoints) as wasmconfd keeps them: only
//! what the model, the Events and snapshots read, in types of our own. Kubernetes' types hold
//! every field of the API, nearly all of them empty: a Service is 824 bytes before any of its
//! strings, and a map of one label takes 544. At 10,000 services they were most of the memory.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;

/// Text that is read once and never changed.
pub type Text = Box<str>;

/// `text` as a `String`, for Kubernetes' types and the model's.
pub fn owned(text: &Option<Text>) -> Option<String> {
    text.as_deref().map(str::to_string)
}

/// What is kept of an object's metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    pub namespace: Option<Text>,
    pub name: Option<Text>,
    pub uid: Option<Text>,
    pub resource_version: Option<Text>,
    pub created: Option<Time>,
    pub labels: Pairs,
    /// Without kubectl's last-applied annotation (a copy of the whole object).
    pub annotations: Pairs,
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

/// A port of a Service or of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Port {
    pub name: Option<Text>,
    pub number: Option<i32>,
    pub protocol: Option<Text>,
    pub app_protocol: Option<Text>,
}

/// A Service: its metadata and the ports of its spec.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub meta: Meta,
    pub ports: Box<[Port]>,
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
#[derive(Debug, Clone, PartialEq, Default)]
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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoints {
    pub meta: Meta,
    pub subsets: Vec<core::EndpointSubset>,
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
