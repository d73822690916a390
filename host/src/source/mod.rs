//! Where the Kubernetes objects come from: a snapshot file, exactly what
//! `kubectl get services,endpointslices,endpoints -A -o yaml` prints (YAML or JSON, a `List` or
//! a stream of documents), or the API server itself ([`kubernetes`]).

pub mod kubernetes;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use std::path::Path;

use crate::model::Problem;

/// The objects the model is built from.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub endpoints: Vec<Endpoints>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("snapshot {path} is not valid YAML or JSON: {source}")]
    Syntax {
        path: String,
        source: serde_yaml::Error,
    },
}

/// Read a snapshot file. Objects that do not parse are reported as problems, not fatal.
pub fn read_snapshot(path: &Path) -> Result<(Objects, Vec<Problem>), SnapshotError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        path: name.clone(),
        source,
    })?;
    parse_snapshot(&text).map_err(|source| SnapshotError::Syntax { path: name, source })
}

/// Parse snapshot text: YAML or JSON, one `List` or many documents.
pub fn parse_snapshot(text: &str) -> Result<(Objects, Vec<Problem>), serde_yaml::Error> {
    let mut objects = Objects::default();
    let mut problems = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document)?;
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

/// The snapshot format: a v1 `List` of every object, as YAML.
pub fn to_snapshot(objects: &Objects) -> Result<String, serde_yaml::Error> {
    let mut items = Vec::new();
    for service in &objects.services {
        items.push(serde_yaml::to_value(service)?);
    }
    for slice in &objects.endpoint_slices {
        items.push(serde_yaml::to_value(slice)?);
    }
    for endpoints in &objects.endpoints {
        items.push(serde_yaml::to_value(endpoints)?);
    }
    let mut list = serde_yaml::Mapping::new();
    list.insert("apiVersion".into(), "v1".into());
    list.insert("kind".into(), "List".into());
    list.insert("items".into(), items.into());
    serde_yaml::to_string(&list)
}

impl Objects {
    /// Add one object; other kinds are ignored.
    fn add(&mut self, item: serde_json::Value) -> Result<(), Problem> {
        let text = |key: &str| {
            item.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        let meta = |key: &str| {
            item.pointer(&format!("/metadata/{key}"))
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let object = format!("{kind} {}/{}", meta("namespace"), meta("name"));
        let invalid = |e: serde_json::Error| Problem {
            object: object.clone(),
            reason: format!("not a valid {kind}: {e}"),
        };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => self
                .services
                .push(serde_json::from_value(item).map_err(invalid)?),
            ("v1", "Endpoints") => self
                .endpoints
                .push(serde_json::from_value(item).map_err(invalid)?),
            ("discovery.k8s.io/v1", "EndpointSlice") => self
                .endpoint_slices
                .push(serde_json::from_value(item).map_err(invalid)?),
            _ => tracing::debug!(%object, %api_version, "ignoring an object of another kind"),
        }
        Ok(())
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
}
