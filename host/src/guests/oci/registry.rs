//! Talking to registries: credentials, pushing, resolving and pulling Wasm artifacts.

use super::{GuestRef, digest_of};
use std::collections::HashMap;
use std::time::Duration;

/// The Wasm OCI artifact layout: the config's media type, and the layer's.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The layer type oci-client and Kubewarden push; accepted when pulling.
pub const OLDER_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    /// Basic auth for every registry.
    pub credentials: Option<(String, String)>,
    /// Basic auth per registry (`host[:port]`), for those `credentials` leave out; the others
    /// are anonymous.
    pub logins: HashMap<String, (String, String)>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_files: Vec<std::path::PathBuf>,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    pub limits: RegistryLimits,
}

/// How long registry requests may take and how much they may send.
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    /// Connecting (TCP and TLS).
    pub connect_timeout: Duration,
    /// Waiting for the next bytes of an answer.
    pub read_timeout: Duration,
    /// One request as a whole.
    pub timeout: Duration,
    /// The largest component pulled, in bytes.
    pub max_guest_size: u64,
}

/// A client for the registries of guest references.
pub struct Registry {
    pub(super) client: oci_client::Client,
    credentials: Option<(String, String)>,
    logins: HashMap<String, (String, String)>,
    limits: RegistryLimits,
    /// For manifests, read with a size limit (oci-client reads them whole).
    http: reqwest::Client,
    plain_http: Vec<String>,
}

/// The largest manifest read. The OCI distribution spec lets registries refuse manifests over
/// 4 MiB; a guest's is under 1 KiB.
const MAX_MANIFEST_SIZE: usize = 4 << 20;

impl Registry {
    pub fn new(access: &RegistryAccess) -> anyhow::Result<Registry> {
        use anyhow::Context as _;
        // reqwest is built without a crypto provider of its own: use the one kube uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certificates = Vec::new();
        let mut http = reqwest::Client::builder()
            .connect_timeout(access.limits.connect_timeout)
            .read_timeout(access.limits.read_timeout);
        for file in &access.ca_files {
            let data = std::fs::read(file)
                .with_context(|| format!("cannot read CA file {}", file.display()))?;
            let certificate = reqwest::Certificate::from_pem(&data)
                .with_context(|| format!("{} is not a certificate in PEM", file.display()))?;
            http = http.tls_certs_merge([certificate]);
            certificates.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            });
        }
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(access.plain_http.clone()),
            extra_root_certificates: certificates,
            connect_timeout: Some(access.limits.connect_timeout),
            read_timeout: Some(access.limits.read_timeout),
            ..Default::default()
        };
        Ok(Registry {
            client: oci_client::Client::new(config),
            credentials: access.credentials.clone(),
            logins: access.logins.clone(),
            limits: access.limits,
            http: http.build()?,
            plain_http: access.plain_http.clone(),
        })
    }

    /// The manifest `reference` (a tag or a digest) of `guest`'s repository, as the registry
    /// sent it, read only up to [`MAX_MANIFEST_SIZE`]; `None` when there is no such manifest.
    pub(super) async fn manifest(
        &self,
        guest: &GuestRef,
        reference: &str,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let image = guest.reference();
        let token = self
            .client
            .auth(
                &image,
                &self.auth(guest),
                oci_client::RegistryOperation::Pull,
            )
            .await
            .map_err(|e| self.failed(guest, format!("cannot log in to {}", guest.registry), e))?;
        let scheme = if self.plain_http.contains(&guest.registry) {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{reference}",
            guest.registry, guest.repository
        );
        let mut request = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
        );
        request = match (token, self.auth(guest)) {
            (Some(token), _) => request.bearer_auth(token),
            (None, oci_client::secrets::RegistryAuth::Basic(user, password)) => {
                request.basic_auth(user, Some(password))
            }
            (None, _) => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {url}: {e}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let body = read_bounded(response, &url).await?;
        if !status.is_success() {
            anyhow::bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(512)])
            );
        }
        Ok(Some(body))
    }

    /// `request`, given up after the total timeout with an error saying `what` did not finish.
    pub(super) async fn within<T, E>(
        &self,
        what: impl FnOnce() -> String,
        request: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        E: From<TimedOut>,
    {
        match tokio::time::timeout(self.limits.timeout, request).await {
            Ok(result) => result,
            Err(_) => Err(TimedOut(format!(
                "{}: the registry did not finish within {} (--registry-timeout)",
                what(),
                humantime::format_duration(self.limits.timeout)
            ))
            .into()),
        }
    }

    /// The blob `layer` of `reference`, refused when it is (or turns out to be) larger than
    /// its descriptor says or than `max` (which `limit` names), without reading more than that.
    pub(super) async fn pull_bounded(
        &self,
        reference: &oci_client::Reference,
        layer: &oci_client::manifest::OciDescriptor,
        (max, limit): (u64, &str),
    ) -> Result<Vec<u8>, oci_client::errors::OciDistributionError> {
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > max {
            return Err(oci_client::errors::OciDistributionError::GenericError(
                Some(format!(
                    "its manifest says it has {size} bytes, more than the {max} allowed ({limit})"
                )),
            ));
        }
        let mut out = Bounded {
            bytes: Vec::new(),
            limit: size,
        };
        self.client.pull_blob(reference, layer, &mut out).await?;
        Ok(out.bytes)
    }

    /// How to log in to `guest`'s registry.
    pub(super) fn auth(&self, guest: &GuestRef) -> oci_client::secrets::RegistryAuth {
        let credentials = self.credentials.as_ref();
        match credentials.or_else(|| self.logins.get(&login_key(&guest.registry))) {
            Some((user, password)) => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }

    /// Push `wasm` as a Wasm OCI artifact to `target` (which names a tag); its manifest's digest.
    pub async fn push(&self, wasm: &[u8], target: &GuestRef) -> anyhow::Result<String> {
        let layer =
            oci_client::client::ImageLayer::new(wasm.to_vec(), LAYER_MEDIA_TYPE.to_string(), None);
        let config = serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [digest_of(wasm)],
        });
        let config = oci_client::client::Config {
            data: serde_json::to_vec(&config)?.into(),
            media_type: CONFIG_MEDIA_TYPE.to_string(),
            annotations: None,
        };
        let reference = target.reference();
        self.client
            .push(&reference, &[layer], config, &self.auth(target), None)
            .await
            .map_err(|e| self.failed(target, format!("cannot push to {target}"), e))?;
        self.resolve(target).await
    }

    /// The digest of the manifest `guest` names: its own digest if it has one, else what its tag
    /// points to now.
    pub async fn resolve(&self, guest: &GuestRef) -> anyhow::Result<String> {
        if let Some(digest) = &guest.digest {
            return Ok(digest.clone());
        }
        let what = || format!("cannot resolve {guest}");
        self.within(what, async {
            self.client
                .fetch_manifest_digest(&guest.reference(), &self.auth(guest))
                .await
                .map_err(|e| self.failed(guest, what(), e))
        })
        .await
    }

    /// The artifact at `digest` in `guest`'s repository, pulled by digest: its manifest, which
    /// must hash to `digest`, and its component, which must hash to the manifest's layer digest.
    pub async fn pull(&self, guest: &GuestRef, digest: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let pinned = guest.at(digest).reference();
        let what = || format!("cannot pull the manifest of {guest}");
        let raw = self
            .within(what, self.manifest(guest, digest))
            .await
            .map_err(|e| e.context(what()))?
            .ok_or_else(|| anyhow::anyhow!("{}: the registry has no manifest {digest}", what()))?;
        if digest_of(&raw) != digest {
            anyhow::bail!(
                "the manifest the registry sent for {guest} does not have digest {digest}: refused"
            );
        }
        let layer = wasm_layer(guest, &raw)?;
        let wasm = self
            .within(|| format!("cannot pull the component of {guest}"), async {
                let max = (self.limits.max_guest_size, "--max-guest-size-mib");
                self.pull_bounded(&pinned, &layer, max).await.map_err(|e| {
                    self.failed(guest, format!("cannot pull the component of {guest}"), e)
                })
            })
            .await?;
        if digest_of(&wasm) != layer.digest {
            anyhow::bail!(
                "the component the registry sent for {guest} does not have digest {}: refused \
                 (the registry's copy is damaged or was tampered with)",
                layer.digest
            );
        }
        Ok((raw, wasm))
    }
}

/// The one Wasm layer of `guest`'s artifact manifest `raw`.
pub(super) fn wasm_layer(
    guest: &GuestRef,
    raw: &[u8],
) -> anyhow::Result<oci_client::manifest::OciDescriptor> {
    let manifest: oci_client::manifest::OciImageManifest =
        serde_json::from_slice(raw).map_err(|e| {
            anyhow::anyhow!("the manifest of {guest} is not an OCI image manifest: {e}")
        })?;
    let [layer] = manifest.layers.as_slice() else {
        anyhow::bail!(
            "{guest} has {} layers; a guest artifact has exactly one, of type {LAYER_MEDIA_TYPE}",
            manifest.layers.len()
        );
    };
    if layer.media_type != LAYER_MEDIA_TYPE && layer.media_type != OLDER_LAYER_MEDIA_TYPE {
        anyhow::bail!(
            "{guest} is not a Wasm artifact: its layer is {}, not {LAYER_MEDIA_TYPE}",
            layer.media_type
        );
    }
    Ok(layer.clone())
}

/// The body of `response` (from `url`), refused past [`MAX_MANIFEST_SIZE`] without reading on.
async fn read_bounded(response: reqwest::Response, url: &str) -> anyhow::Result<Vec<u8>> {
    use futures::StreamExt as _;
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("cannot read {url}: {e}"))?;
        if body.len() + chunk.len() > MAX_MANIFEST_SIZE {
            anyhow::bail!(
                "the registry sent more than {MAX_MANIFEST_SIZE} bytes for {url}, more than any \
                 manifest: cut off and refused"
            );
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A registry request that did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(String);

/// Collects a blob, failing as soon as it grows past `limit` bytes.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if (self.bytes.len() + data.len()) as u64 > self.limit {
            let limit = self.limit;
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {limit} bytes the manifest names: cut off and \
                 refused"
            ))));
        }
        self.bytes.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Registry {
    /// `what`, about a guest in `guest`'s registry, failed because of `error`: the cause (the
    /// innermost error, which the client's own message leaves out), and what to do about it.
    pub(super) fn failed(
        &self,
        guest: &GuestRef,
        what: String,
        error: oci_client::errors::OciDistributionError,
    ) -> anyhow::Error {
        use oci_client::errors::{OciDistributionError as E, OciErrorCode as Code};
        let registry = &guest.registry;
        let codes: Vec<&Code> = match &error {
            E::RegistryError { envelope, .. } => envelope.errors.iter().map(|e| &e.code).collect(),
            _ => Vec::new(),
        };
        let status = match &error {
            E::ServerError { code, .. } => Some(*code),
            _ => None,
        };
        let unauthorized = matches!(error, E::UnauthorizedError { .. })
            || matches!(error, E::AuthenticationFailure(_))
            || matches!(status, Some(401 | 403))
            || codes
                .iter()
                .any(|c| matches!(c, Code::Unauthorized | Code::Denied));
        if unauthorized {
            let with_credentials = matches!(
                self.auth(guest),
                oci_client::secrets::RegistryAuth::Basic(..)
            );
            return anyhow::anyhow!(if with_credentials {
                format!(
                    "{what}: {registry} refused the credentials: check --registry-user and \
                     --registry-password, or {registry}'s entry in the docker config.json \
                     (--registry-auth-file, or $DOCKER_CONFIG)"
                )
            } else {
                format!(
                    "{what}: {registry} asks for credentials and none were given: pass \
                     --registry-user and --registry-password, or --registry-auth-file with an \
                     entry for {registry}"
                )
            });
        }
        if status == Some(404)
            || codes.iter().any(|c| {
                matches!(
                    c,
                    Code::ManifestUnknown | Code::NameUnknown | Code::NotFound
                )
            })
        {
            return anyhow::anyhow!(
                "{what}: {registry} has no such tag or repository; check the reference, or push \
                 the guest first"
            );
        }
        let cause = innermost(&error);
        let hint = if cause.contains("onnection refused") {
            format!("nothing accepts connections at {registry}: is the registry running there?")
        } else if ["InvalidContentType", "corrupt message", "handshake eof"]
            .iter()
            .any(|sign| cause.contains(sign))
        {
            format!(
                "{registry} does not answer in TLS ({cause}): for a registry served over plain \
                 HTTP, pass --plain-http-registry {registry}"
            )
        } else if cause.contains("certificate") {
            format!(
                "{registry}'s certificate is not trusted ({cause}): for a registry with its own \
                 CA, pass --registry-ca FILE"
            )
        } else if cause.contains("timed out") || cause.contains("deadline") {
            format!(
                "{registry} did not answer in time ({cause}): check that it is reachable, or \
                 raise --registry-connect-timeout"
            )
        } else {
            match &error {
                E::RequestError(_) => format!("the request to {registry} failed: {cause}"),
                _ => error.to_string(),
            }
        };
        anyhow::anyhow!("{what}: {hint}")
    }
}

/// The message of the innermost source of `error`: what actually went wrong.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut error = error;
    while let Some(source) = error.source() {
        error = source;
    }
    error.to_string()
}

/// Basic-auth credentials per registry from a docker `config.json`, as `docker login` writes it
/// and a Kubernetes `kubernetes.io/dockerconfigjson` Secret holds it: `auths.HOST.auth` (base64
/// of `user:password`), or `auths.HOST.username` and `.password`. Credential helpers
/// (`credsStore`, `credHelpers`) are not run, and entries without a password are left out.
pub fn read_logins(file: &std::path::Path) -> anyhow::Result<HashMap<String, (String, String)>> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: HashMap<String, Login>,
    }
    #[derive(serde::Deserialize)]
    struct Login {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let text = std::fs::read_to_string(file).map_err(|e| {
        anyhow::anyhow!("cannot read the registry auth file {}: {e}", file.display())
    })?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a docker config.json: {e}", file.display()))?;
    let mut logins = HashMap::new();
    for (host, login) in config.auths {
        let credentials = match (
            login.auth.filter(|a| !a.is_empty()),
            login.username,
            login.password,
        ) {
            (Some(auth), ..) => base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| {
                    let (user, password) = text.split_once(':')?;
                    Some((user.to_string(), password.to_string()))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: the auth of {host} is not base64 of user:password",
                        file.display()
                    )
                })?,
            (None, Some(user), Some(password)) => (user, password),
            _ => continue,
        };
        logins.insert(login_key(&host), credentials);
    }
    Ok(logins)
}

/// The registry a docker config.json key names: `https://registry.example.com/v1/` and
/// `registry.example.com` are the same, and so are Docker Hub's names.
fn login_key(host: &str) -> String {
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match host.split('/').next().unwrap_or_default() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        host => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_come_from_a_docker_config_json_in_either_form() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"auths": {
                "https://registry.example.com/v1/": {"auth": "dGVhbTpzM2NyZXQ6eA=="},
                "127.0.0.1:5000": {"username": "ci", "password": "pw"},
                "index.docker.io": {"auth": "aHViOmh1Yg=="},
                "helper.example.com": {}
            }, "credsStore": "desktop"}"#,
        )
        .unwrap();
        let logins = read_logins(&file).unwrap();
        let login = |host: &str| logins.get(host).map(|(u, p)| (u.as_str(), p.as_str()));
        assert_eq!(login("registry.example.com"), Some(("team", "s3cret:x")));
        assert_eq!(login("127.0.0.1:5000"), Some(("ci", "pw")));
        assert_eq!(login("docker.io"), Some(("hub", "hub")));
        assert_eq!(logins.len(), 3, "an entry without a password is left out");

        std::fs::write(
            &file,
            r#"{"auths": {"r.example.com": {"auth": "bm9jb2xvbg=="}}}"#,
        )
        .unwrap();
        let error = read_logins(&file).unwrap_err().to_string();
        assert!(
            error.contains("config.json: the auth of r.example.com is not base64 of user:password"),
            "{error}"
        );
        std::fs::write(&file, "auths:").unwrap();
        let error = read_logins(&file).unwrap_err().to_string();
        assert!(error.contains("is not a docker config.json"), "{error}");
    }
}
