//! Guests as OCI artifacts: where they are (`oci://REGISTRY/REPOSITORY:TAG@sha256:DIGEST`).

use std::fmt;
use std::str::FromStr;

/// A guest in an OCI registry: `oci://REGISTRY/REPOSITORY:TAG`, `oci://REGISTRY/REPOSITORY@sha256:DIGEST`
/// or both (the tag for people, the digest pinning what runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRef {
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex digits>`.
    pub digest: Option<String>,
}

impl FromStr for GuestRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "expected oci://REGISTRY/REPOSITORY:TAG, oci://REGISTRY/REPOSITORY@sha256:DIGEST \
                     or oci://REGISTRY/REPOSITORY:TAG@sha256:DIGEST";
        let bad = |why: &str| format!("{text:?} is not a guest reference: {why}; {usage}");
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (rest, None),
        };
        if let Some(digest) = digest {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("the digest does not start with sha256:"))?;
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad("a sha256 digest is 64 lower-case hex digits"));
            }
        }
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("there is no repository after the registry"))?;
        let host_chars = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if registry.is_empty() || !registry.chars().all(host_chars) {
            return Err(bad(
                "the registry must be a host name or address, with an optional port",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (path, None),
        };
        let component = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !repository.split('/').all(component) {
            return Err(bad(
                "the repository must be lower-case letters, digits and ._- in /-separated parts",
            ));
        }
        if let Some(tag) = tag {
            let valid = tag.len() <= 128
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid {
                return Err(bad("a tag is up to 128 letters, digits and ._-"));
            }
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad(
                "name a tag or a digest (there is no implicit `latest`)",
            ));
        }
        Ok(GuestRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }
}

impl fmt::Display for GuestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_three_forms_parse_and_print_back() {
        for text in [
            "oci://registry.example.com/team/paths:1.2.0".to_string(),
            format!("oci://127.0.0.1:5000/paths@{DIGEST}"),
            format!("oci://registry.example.com:443/a/b/paths:v2@{DIGEST}"),
        ] {
            let parsed: GuestRef = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        let pinned: GuestRef = format!("oci://127.0.0.1:5000/team/paths:v1@{DIGEST}")
            .parse()
            .unwrap();
        assert_eq!(
            pinned,
            GuestRef {
                registry: "127.0.0.1:5000".into(),
                repository: "team/paths".into(),
                tag: Some("v1".into()),
                digest: Some(DIGEST.into()),
            }
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let error = |text: &str| text.parse::<GuestRef>().unwrap_err();
        assert!(error("registry.example.com/paths:1").contains("does not start with oci://"));
        assert!(error("oci://registry.example.com/paths").contains("name a tag or a digest"));
        assert!(error("oci://registry.example.com:5000").contains("no repository"));
        assert!(error("oci://r.example.com/Paths:1").contains("lower-case"));
        assert!(error("oci://r.example.com/paths@sha256:abc").contains("64 lower-case hex"));
        assert!(error("oci://r.example.com/paths@md5:abc").contains("sha256:"));
        assert!(error("oci://r.example.com/paths:a b").contains("a tag is"));
        assert!(error("oci://r.example.com//paths:1").contains("repository"));
    }
}

/// The Wasm OCI artifact layout: the config's media type, and the layer's.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The layer type oci-client and Kubewarden push; accepted when pulling.
pub const OLDER_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    /// Basic auth; anonymous without it.
    pub credentials: Option<(String, String)>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_files: Vec<std::path::PathBuf>,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
}

/// A client for the registries of guest references.
pub struct Registry {
    client: oci_client::Client,
    auth: oci_client::secrets::RegistryAuth,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl GuestRef {
    /// The same reference pinned to `digest`.
    pub fn at(&self, digest: &str) -> GuestRef {
        GuestRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    fn reference(&self) -> oci_client::Reference {
        let text = self.to_string();
        text.trim_start_matches("oci://")
            .parse()
            .expect("a checked GuestRef is a valid OCI reference")
    }
}

impl Registry {
    pub fn new(access: &RegistryAccess) -> anyhow::Result<Registry> {
        use anyhow::Context as _;
        // reqwest is built without a crypto provider of its own: use the one kube uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certificates = Vec::new();
        for file in &access.ca_files {
            let data = std::fs::read(file)
                .with_context(|| format!("cannot read CA file {}", file.display()))?;
            certificates.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            });
        }
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(access.plain_http.clone()),
            extra_root_certificates: certificates,
            ..Default::default()
        };
        let auth = match &access.credentials {
            Some((user, password)) => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: oci_client::Client::new(config),
            auth,
        })
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
            .push(&reference, &[layer], config, &self.auth, None)
            .await
            .map_err(|e| failed(format!("cannot push to {target}"), e))?;
        self.resolve(target).await
    }

    /// The digest of the manifest `guest` names: its own digest if it has one, else what its tag
    /// points to now.
    pub async fn resolve(&self, guest: &GuestRef) -> anyhow::Result<String> {
        if let Some(digest) = &guest.digest {
            return Ok(digest.clone());
        }
        self.client
            .fetch_manifest_digest(&guest.reference(), &self.auth)
            .await
            .map_err(|e| failed(format!("cannot resolve {guest}"), e))
    }

    /// The component of the artifact at `digest` in `guest`'s repository, pulled by digest:
    /// the manifest must hash to `digest` and the layer to the manifest's layer digest.
    pub async fn pull(&self, guest: &GuestRef, digest: &str) -> anyhow::Result<Vec<u8>> {
        let pinned = guest.at(digest).reference();
        let (raw, _) = self
            .client
            .pull_manifest_raw(
                &pinned,
                &self.auth,
                &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
            )
            .await
            .map_err(|e| failed(format!("cannot pull the manifest of {guest}"), e))?;
        if digest_of(&raw) != digest {
            anyhow::bail!(
                "the manifest the registry sent for {guest} does not have digest {digest}: refused"
            );
        }
        let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| {
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
        let mut wasm = Vec::new();
        self.client
            .pull_blob(&pinned, layer, &mut wasm)
            .await
            .map_err(|e| failed(format!("cannot pull the component of {guest}"), e))?;
        if digest_of(&wasm) != layer.digest {
            anyhow::bail!(
                "the component the registry sent for {guest} does not have digest {}: refused \
                 (the registry's copy is damaged or was tampered with)",
                layer.digest
            );
        }
        Ok(wasm)
    }
}

/// `what` failed because of `error`, with what to do for the common causes.
fn failed(what: String, error: oci_client::errors::OciDistributionError) -> anyhow::Error {
    let text = error.to_string();
    let hint = if text.contains("401") || text.contains("UNAUTHORIZED") {
        "; the registry refused the credentials: check --registry-user and --registry-password"
    } else if text.contains("error sending request") {
        "; the registry cannot be reached, or its certificate is not trusted: for a registry \
         with its own CA, pass --registry-ca FILE"
    } else {
        ""
    };
    anyhow::anyhow!("{what}: {text}{hint}")
}
