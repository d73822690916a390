//! The Kubernetes API as a source: how to connect (kubeconfig, in-cluster service account, or a
//! list of API servers tried in order), and reading the objects the model is built from.

use super::LAST_APPLIED;
use super::Objects;
use super::compact;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Secret, Service};
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
    /// A file holding the bearer token, for `api_servers`; read again when it changes.
    pub token_file: Option<PathBuf>,
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
    /// Also read `kubernetes.io/tls` Secrets (in `namespace`, or all), for certificates.
    pub tls_secrets: bool,
    /// Read only the TLS Secrets with these labels (`key=value,...`).
    pub tls_secret_selector: Option<String>,
}

/// How often the token file is read again: with the kube client's own reading of the copy
/// (at least once a minute), a rotated token is in use within about a minute.
const TOKEN_FILE_CHECK: Duration = Duration::from_secs(10);

/// The token of `--token-file` as the kube client reads it: a private copy, trimmed (kube
/// would send a final line break and fail with "invalid bearer token"), that follows the file.
struct TokenCopy {
    source: PathBuf,
    /// Private to this process (0700); the copy is `token` inside.
    dir: tempfile::TempDir,
    token: String,
}

impl TokenCopy {
    /// Copy the token of `source`, and keep the copy up to date while the runtime runs; the
    /// copy's path.
    fn follow(source: &std::path::Path) -> Result<PathBuf, String> {
        let dir =
            tempfile::tempdir().map_err(|e| format!("cannot make a private directory: {e}"))?;
        let mut copy = TokenCopy {
            source: source.to_path_buf(),
            dir,
            token: String::new(),
        };
        copy.refresh()?;
        let path = copy.path();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_FILE_CHECK).await;
                match copy.refresh() {
                    Ok(true) => {
                        tracing::info!(file = %copy.source.display(), "the token changed: using the new one")
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!("{error}; the last token stays in use"),
                }
            }
        });
        Ok(path)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Take the token of the source file if it changed: whether it did.
    fn refresh(&mut self) -> Result<bool, String> {
        let file = self.source.display();
        let text = std::fs::read_to_string(&self.source)
            .map_err(|e| format!("cannot read the token file {file}: {e}"))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("the token file {file} is empty"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the token file {file} holds more than a token (spaces or line breaks inside)"
            ));
        }
        if token == self.token {
            return Ok(false);
        }
        crate::files::write_atomically(&self.path(), token.as_bytes())
            .map_err(|e| format!("cannot copy the token of {file}: {e}"))?;
        self.token = token.to_string();
        Ok(true)
    }
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
        let token_file = match &self.token_file {
            Some(file) => Some(TokenCopy::follow(file).map_err(|e| invalid(&e))?),
            None => None,
        };
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
            config.auth_info.token_file = token_file.as_ref().map(|f| f.display().to_string());
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
        if self.tls_secrets {
            let params = self.secret_params();
            objects.secrets = shared(self.api::<Secret>(client).list(&params).await?.items);
        }
        Ok(objects)
    }

    /// Which Secrets to read: of type `kubernetes.io/tls`, with `tls_secret_selector`'s labels.
    pub fn secret_params(&self) -> ListParams {
        let params = ListParams::default().fields("type=kubernetes.io/tls");
        match &self.tls_secret_selector {
            Some(selector) => params.labels(selector),
            None => params,
        }
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

/// `items`, slimmed, to be shared.
fn shared<K: Slim>(items: Vec<K>) -> Vec<std::sync::Arc<K::Kept>> {
    items
        .into_iter()
        .map(|item| std::sync::Arc::new(item.slim()))
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

/// What is kept of an object read (from the API or a snapshot): what the model, the events and
/// snapshots use. Services, EndpointSlices and legacy Endpoints are kept in types of our own
/// ([`super::compact`]); Namespaces and Secrets, which are few, lose their managed fields (and
/// Namespaces their spec and status).
pub trait Slim: kube::Resource + Sized {
    type Kept;
    fn slim(self) -> Self::Kept;
    /// The namespace and name of an object kept.
    fn key(kept: &Self::Kept) -> (&str, &str);
}

/// Managed fields and kubectl's last-applied annotation go from every object kept.
pub(super) fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

impl Slim for Service {
    type Kept = compact::Service;
    fn slim(self) -> compact::Service {
        self.into()
    }
    fn key(kept: &compact::Service) -> (&str, &str) {
        kept.meta.key()
    }
}

impl Slim for EndpointSlice {
    type Kept = compact::EndpointSlice;
    fn slim(self) -> compact::EndpointSlice {
        self.into()
    }
    fn key(kept: &compact::EndpointSlice) -> (&str, &str) {
        kept.meta.key()
    }
}

impl Slim for Endpoints {
    type Kept = compact::Endpoints;
    fn slim(self) -> compact::Endpoints {
        self.into()
    }
    fn key(kept: &compact::Endpoints) -> (&str, &str) {
        kept.meta.key()
    }
}

impl Slim for Namespace {
    type Kept = Namespace;
    fn slim(mut self) -> Namespace {
        slim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
        self
    }
    fn key(kept: &Namespace) -> (&str, &str) {
        meta_key(&kept.metadata)
    }
}

impl Slim for Secret {
    type Kept = Secret;
    fn slim(mut self) -> Secret {
        slim_meta(&mut self.metadata);
        self
    }
    fn key(kept: &Secret) -> (&str, &str) {
        meta_key(&kept.metadata)
    }
}

fn meta_key(meta: &ObjectMeta) -> (&str, &str) {
    let (namespace, name) = (meta.namespace.as_deref(), meta.name.as_deref());
    (namespace.unwrap_or_default(), name.unwrap_or_default())
}

#[cfg(test)]
mod token_tests {
    use super::TokenCopy;

    #[test]
    fn the_token_copy_follows_its_file_and_keeps_the_last_good_token() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("token");
        std::fs::write(&source, "first\n").unwrap();
        let mut copy = TokenCopy {
            source: source.clone(),
            dir: tempfile::tempdir().unwrap(),
            token: String::new(),
        };
        assert_eq!(copy.refresh(), Ok(true));
        assert_eq!(std::fs::read_to_string(copy.path()).unwrap(), "first");
        assert_eq!(copy.refresh(), Ok(false));

        std::fs::write(&source, "  second\r\n").unwrap();
        assert_eq!(copy.refresh(), Ok(true));
        assert_eq!(std::fs::read_to_string(copy.path()).unwrap(), "second");

        for bad in ["", "two words"] {
            std::fs::write(&source, bad).unwrap();
            assert!(copy.refresh().is_err(), "{bad:?}");
            assert_eq!(std::fs::read_to_string(copy.path()).unwrap(), "second");
        }
    }
}
