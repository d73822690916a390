//! The Kubernetes API as a source: how to connect (kubeconfig, in-cluster service account, or a
//! list of API servers tried in order), and reading the objects the model is built from.

use super::LAST_APPLIED;
use super::Objects;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the API and what to read from it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// API servers tried in order (python-confd's APISERVERS); empty: kubeconfig or in-cluster.
    pub api_servers: Vec<String>,
    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// CA bundle (PEM) that signed the API servers' certificates, for `api_servers`.
    pub ssl_ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for `api_servers`.
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    /// Bearer token, for `api_servers`.
    pub token: Option<String>,
    /// Limit on connecting, and on waiting for any answer, for every request.
    pub timeout: Duration,
    /// Read only this namespace (default: all).
    pub namespace: Option<String>,
    /// Read only objects with these labels (`key=value,...`).
    pub label_selector: Option<String>,
    /// Also read legacy v1 Endpoints objects (python-confd annotated those).
    pub legacy_endpoints: bool,
    /// Also read Namespace objects (all of them, whatever `namespace` and `label_selector`
    /// say), for scopes that select namespaces by label.
    pub namespaces: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid Kubernetes connection settings: {0}")]
    Config(String),
    #[error("no API server could be read ({tried}): {last}")]
    Unreachable { tried: String, last: String },
}

impl Connection {
    /// One client configuration per API server to try, in order.
    pub async fn configs(&self) -> Result<Vec<kube::Config>, SourceError> {
        let invalid = |e: &dyn std::fmt::Display| SourceError::Config(e.to_string());
        let mut configs = Vec::new();
        if self.api_servers.is_empty() {
            let options = KubeConfigOptions {
                context: self.context.clone(),
                ..Default::default()
            };
            let config = match &self.kubeconfig {
                Some(path) => {
                    let file = Kubeconfig::read_from(path)
                        .map_err(|e| invalid(&format!("{}: {e}", path.display())))?;
                    kube::Config::from_custom_kubeconfig(file, &options)
                        .await
                        .map_err(|e| invalid(&e))?
                }
                None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| invalid(&e))?,
                None => kube::Config::infer().await.map_err(|e| invalid(&e))?,
            };
            configs.push(config);
        }
        for url in &self.api_servers {
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e| invalid(&format!("API server {url:?}: {e}")))?;
            if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
                return Err(invalid(&format!(
                    "API server {url:?} is not a URL: write it with its scheme, such as \
                     https://{url}"
                )));
            }
            let mut config = kube::Config::new(uri);
            config.root_cert_file = self.ssl_ca.clone();
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
            config.auth_info.client_certificate = path(&self.ssl_cert);
            config.auth_info.client_key = path(&self.ssl_key);
            config.auth_info.token = self.token.clone().map(Into::into);
            configs.push(config);
        }
        for config in &mut configs {
            config.connect_timeout = Some(self.timeout);
            config.read_timeout = Some(self.timeout);
            config.write_timeout = Some(self.timeout);
            config.reset_reader_on_write = true;
        }
        Ok(configs)
    }

    /// List every object the model is built from, from the first API server that answers.
    pub async fn list(&self) -> Result<Objects, SourceError> {
        let mut tried = Vec::new();
        let mut last = String::new();
        let configs = self.configs().await?;
        let count = configs.len();
        for (i, config) in configs.into_iter().enumerate() {
            let server = config.cluster_url.to_string();
            let result = async {
                let client = kube::Client::try_from(config)?;
                self.list_with(&client).await
            };
            match result.await {
                Ok(objects) => return Ok(objects),
                Err(error) => {
                    let error = error_chain(&error);
                    if i + 1 < count {
                        tracing::warn!(%server, %error, "cannot read from API server, trying the next");
                    }
                    last = error;
                    tried.push(server);
                }
            }
        }
        Err(SourceError::Unreachable {
            tried: tried.join(", "),
            last,
        })
    }

    async fn list_with(&self, client: &kube::Client) -> Result<Objects, kube::Error> {
        let mut params = ListParams::default();
        if let Some(selector) = &self.label_selector {
            params = params.labels(selector);
        }
        let mut objects = Objects {
            services: shared(self.api::<Service>(client).list(&params).await?.items),
            endpoint_slices: shared(self.api::<EndpointSlice>(client).list(&params).await?.items),
            ..Objects::default()
        };
        if self.legacy_endpoints {
            objects.endpoints = shared(self.api::<Endpoints>(client).list(&params).await?.items);
        }
        if self.namespaces {
            let all = Api::<Namespace>::all(client.clone());
            objects.namespaces = shared(all.list(&ListParams::default()).await?.items);
        }
        Ok(objects)
    }

    /// `K` in the namespace to read, or in all.
    pub fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
}

/// `items`, stripped of what guests do not see, to be shared.
fn shared<K: kube::Resource>(items: Vec<K>) -> Vec<std::sync::Arc<K>> {
    items
        .into_iter()
        .map(|mut item| {
            strip(item.meta_mut());
            std::sync::Arc::new(item)
        })
        .collect()
}

/// An error with its causes: `client error (Connect): tcp connect error: Connection refused`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Drop managed fields and kubectl's last-applied annotation: large, and never used.
pub fn strip(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}
