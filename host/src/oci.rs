//! Guests as OCI artifacts: references (`oci://REGISTRY/REPOSITORY:TAG@sha256:DIGEST`), pushing
//! and pulling Wasm artifacts, cosign-compatible keyed signatures checked offline, and a
//! content-addressed cache that keeps the verified signature beside each component.

use std::collections::HashMap;
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

/// The Wasm OCI artifact layout: the config's media type, and the layer's.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The layer type oci-client and Kubewarden push; accepted when pulling.
pub const OLDER_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// How to reach registries.
#[derive(Debug, Clone, Default)]
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
}

/// A client for the registries of guest references.
pub struct Registry {
    client: oci_client::Client,
    credentials: Option<(String, String)>,
    logins: HashMap<String, (String, String)>,
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

    /// The same reference for oci-client, built from its parts: parsing one compiles a large
    /// regular expression, a good part of a start's time.
    fn reference(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (self.tag.clone(), self.digest.clone()) {
            (Some(tag), Some(digest)) => {
                oci_client::Reference::with_tag_and_digest(registry, repository, tag, digest)
            }
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest)
            }
            (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag),
            (None, None) => unreachable!("a GuestRef names a tag or a digest"),
        }
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
        Ok(Registry {
            client: oci_client::Client::new(config),
            credentials: access.credentials.clone(),
            logins: access.logins.clone(),
        })
    }

    /// How to log in to `guest`'s registry.
    fn auth(&self, guest: &GuestRef) -> oci_client::secrets::RegistryAuth {
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
            .fetch_manifest_digest(&guest.reference(), &self.auth(guest))
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
                &self.auth(guest),
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
        "; the registry refused the credentials: check --registry-user and --registry-password, \
         or the registry's entry in the docker config.json"
    } else if text.contains("error sending request") {
        "; the registry cannot be reached, or its certificate is not trusted: for a registry \
         with its own CA, pass --registry-ca FILE"
    } else {
        ""
    };
    anyhow::anyhow!("{what}: {text}{hint}")
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

/// cosign's keyed signatures: the simple-signing payload, in a layer of this type, under the tag
/// `sha256-<hex>.sig`, with the signature (base64 DER ECDSA P-256 over the payload) in this
/// annotation.
const SIGNATURE_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Why a guest's signature does not check out.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "{0} is not signed (no {1}): sign it (`wasmconfd guest sign --key KEY {0}`, or cosign \
         with a key), or allow unsigned guests explicitly"
    )]
    Unsigned(String, String),
    #[error(
        "the signatures of {0} are for another artifact ({1}), copied next to this one: refused; \
         sign this digest"
    )]
    OtherArtifact(String, String),
    #[error(
        "{0} is signed, but by none of the trusted keys: refused; add the signer's public key \
         with --trusted-key, or sign it with a trusted key"
    )]
    UntrustedKey(String),
    #[error("cannot check the signatures of {0}: {1}")]
    Registry(String, String),
}

/// A trusted public key, from a PEM file such as cosign's `cosign.pub`.
pub fn read_public_key(file: &std::path::Path) -> anyhow::Result<p256::ecdsa::VerifyingKey> {
    use p256::pkcs8::DecodePublicKey as _;
    let pem = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read public key {}: {e}", file.display()))?;
    p256::ecdsa::VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an ECDSA P-256 public key in PEM (\"BEGIN PUBLIC KEY\"): {e}",
            file.display()
        )
    })
}

/// A signing key: ECDSA P-256 in PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE
/// KEY`, as `openssl ecparam -name prime256v1 -genkey` writes it).
pub fn read_signing_key(file: &std::path::Path) -> anyhow::Result<p256::ecdsa::SigningKey> {
    use p256::pkcs8::DecodePrivateKey as _;
    let pem = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", file.display()))?;
    if pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY") {
        anyhow::bail!(
            "{} is a cosign key, which wasmconfd does not decrypt: sign with cosign itself, or use \
             an unencrypted P-256 key in PEM",
            file.display()
        );
    }
    let secret = p256::SecretKey::from_pkcs8_pem(&pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not an ECDSA P-256 private key in PEM: {e}",
                file.display()
            )
        })?;
    Ok(secret.into())
}

/// The simple-signing payload that says `digest` in `guest`'s repository is signed.
fn payload(guest: &GuestRef, digest: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{}", guest.registry, guest.repository)},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&payload).expect("a JSON value serializes")
}

/// The digest a simple-signing payload vouches for, if it is one.
fn signed_digest(payload: &[u8]) -> Option<String> {
    let payload: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = &payload["critical"];
    (critical["type"] == SIGNATURE_TYPE)
        .then(|| {
            critical["image"]["docker-manifest-digest"]
                .as_str()
                .map(str::to_string)
        })
        .flatten()
}

impl GuestRef {
    /// Where cosign keeps the signatures of `digest`: the tag `sha256-<hex>.sig`.
    fn signatures(&self, digest: &str) -> GuestRef {
        GuestRef {
            tag: Some(format!("{}.sig", digest.replace(':', "-"))),
            digest: None,
            ..self.clone()
        }
    }
}

impl Registry {
    /// The signature layers under `digest`'s signature tag, with their payloads; none when the
    /// tag does not exist.
    async fn signature_layers(
        &self,
        guest: &GuestRef,
        digest: &str,
    ) -> Result<Vec<(oci_client::manifest::OciDescriptor, Vec<u8>)>, SignatureError> {
        let tag = guest.signatures(digest).reference();
        let registry_error = |e: oci_client::errors::OciDistributionError| {
            SignatureError::Registry(guest.to_string(), e.to_string())
        };
        let manifest = match self
            .client
            .pull_image_manifest(&tag, &self.auth(guest))
            .await
        {
            Ok((manifest, _)) => manifest,
            Err(oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)) => {
                return Ok(Vec::new());
            }
            Err(e) if e.to_string().to_lowercase().contains("manifest unknown") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(registry_error(e)),
        };
        let mut layers = Vec::new();
        for layer in manifest.layers {
            if layer.media_type != SIGNATURE_LAYER {
                continue;
            }
            let mut payload = Vec::new();
            self.client
                .pull_blob(&tag, &layer, &mut payload)
                .await
                .map_err(registry_error)?;
            layers.push((layer, payload));
        }
        Ok(layers)
    }

    /// Sign `digest` in `guest`'s repository with `key`, next to any signatures it has.
    pub async fn sign(
        &self,
        guest: &GuestRef,
        digest: &str,
        key: &p256::ecdsa::SigningKey,
    ) -> anyhow::Result<()> {
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let payload = payload(guest, digest);
        let signature: p256::ecdsa::Signature = key.sign(&payload);
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature.to_der());
        let mut layers = vec![oci_client::client::ImageLayer::new(
            payload,
            SIGNATURE_LAYER.to_string(),
            Some([(SIGNATURE_ANNOTATION.to_string(), encoded)].into()),
        )];
        for (descriptor, payload) in self.signature_layers(guest, digest).await? {
            layers.push(oci_client::client::ImageLayer::new(
                payload,
                descriptor.media_type,
                descriptor.annotations,
            ));
        }
        let config = oci_client::client::Config {
            data: b"{}".to_vec().into(),
            media_type: "application/vnd.oci.image.config.v1+json".to_string(),
            annotations: None,
        };
        let target = guest.signatures(digest);
        self.client
            .push(
                &target.reference(),
                &layers,
                config,
                &self.auth(guest),
                None,
            )
            .await
            .map_err(|e| failed(format!("cannot push the signature to {target}"), e))?;
        Ok(())
    }

    /// Check that `digest` in `guest`'s repository carries a signature by one of `keys`, over
    /// a payload that names this very digest. The signature that passed, and the index of its key.
    pub async fn verify(
        &self,
        guest: &GuestRef,
        digest: &str,
        keys: &[p256::ecdsa::VerifyingKey],
    ) -> Result<(Signature, usize), SignatureError> {
        use base64::Engine as _;
        let pinned = guest.at(digest).to_string();
        let layers = self.signature_layers(guest, digest).await?;
        if layers.is_empty() {
            let tag = guest.signatures(digest).tag.unwrap_or_default();
            return Err(SignatureError::Unsigned(pinned, tag));
        }
        let mut other = None;
        for (layer, payload) in layers {
            let Some(der) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            else {
                continue;
            };
            let signature = Signature { payload, der };
            match signature.check(digest, keys) {
                Ok(key) => return Ok((signature, key)),
                Err(Some(signed)) => other = Some(signed),
                Err(None) => {}
            }
        }
        Err(match other {
            Some(signed) => SignatureError::OtherArtifact(pinned, signed),
            None => SignatureError::UntrustedKey(pinned),
        })
    }
}

/// A cosign signature: the simple-signing payload and the DER ECDSA signature over it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    #[serde(with = "base64_bytes")]
    payload: Vec<u8>,
    #[serde(with = "base64_bytes")]
    der: Vec<u8>,
}

impl Signature {
    /// Which of `keys` made this signature for `digest`: `Err(Some(other))` when it is for
    /// another digest, `Err(None)` when no key made it.
    fn check(
        &self,
        digest: &str,
        keys: &[p256::ecdsa::VerifyingKey],
    ) -> Result<usize, Option<String>> {
        use p256::ecdsa::signature::Verifier as _;
        let signed = signed_digest(&self.payload).ok_or(None)?;
        if signed != digest {
            return Err(Some(signed));
        }
        let signature = p256::ecdsa::Signature::from_der(&self.der).map_err(|_| None)?;
        keys.iter()
            .position(|key| key.verify(&self.payload, &signature).is_ok())
            .ok_or(None)
    }
}

mod base64_bytes {
    use base64::Engine as _;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Which guests may run: those signed by one of `keys`, and unsigned ones only when allowed.
pub struct Trust {
    pub keys: Vec<p256::ecdsa::VerifyingKey>,
    pub allow_unsigned: bool,
}

/// What the cache remembers of a reference: the digest it resolved to, the component's digest,
/// and the signature that was verified (none for an unsigned guest that was allowed).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    reference: String,
    digest: String,
    component: String,
    signature: Option<Signature>,
}

/// A content-addressed store of pulled guests under `dir`: `blobs/sha256/<hex>` (checked on
/// every read) and `refs/<sha256 of the reference>.json` (the digest and verified signature), so
/// a restart works while the registry is down.
pub struct Cache {
    dir: std::path::PathBuf,
}

impl Cache {
    pub fn new(dir: std::path::PathBuf) -> Cache {
        Cache { dir }
    }

    fn blob(&self, digest: &str) -> std::path::PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn record(&self, guest: &GuestRef) -> std::path::PathBuf {
        let key = digest_of(guest.to_string().as_bytes());
        self.dir
            .join("refs")
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    fn store(&self, record: &Record, wasm: &[u8], guest: &GuestRef) -> std::io::Result<()> {
        crate::files::write_atomically(&self.blob(&record.component), wasm)?;
        let json = serde_json::to_vec_pretty(record).expect("a record serializes");
        crate::files::write_atomically(&self.record(guest), &json)
    }

    fn read(&self, guest: &GuestRef) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(self.record(guest)).ok()?).ok()
    }

    /// The component with digest `digest`, if the cache holds it intact.
    fn component(&self, digest: &str) -> Option<Vec<u8>> {
        let wasm = std::fs::read(self.blob(digest)).ok()?;
        (digest_of(&wasm) == digest).then_some(wasm)
    }

    /// The cached component of `guest`, with its signature checked again against `trust` and
    /// its bytes against their digest.
    fn load(&self, guest: &GuestRef, trust: &Trust) -> anyhow::Result<(String, Vec<u8>)> {
        let record = self
            .read(guest)
            .ok_or_else(|| anyhow::anyhow!("nothing is cached for it"))?;
        match &record.signature {
            Some(signature) => {
                if signature.check(&record.digest, &trust.keys).is_err() {
                    anyhow::bail!("its cached signature is not by a trusted key");
                }
            }
            None if trust.allow_unsigned => {}
            None => anyhow::bail!("the cached copy is unsigned"),
        }
        let wasm = self
            .component(&record.component)
            .ok_or_else(|| anyhow::anyhow!("the cached component is missing or damaged"))?;
        Ok((record.digest, wasm))
    }
}

/// What fetching guests from registries takes.
pub struct Remote {
    pub registry: Registry,
    pub trust: Trust,
    pub cache: Cache,
}

impl Remote {
    /// Fetch `guests` concurrently, each for its slot: its part, or why it cannot be loaded.
    pub async fn fetch(
        &self,
        guests: &[(String, GuestRef)],
    ) -> Vec<anyhow::Result<crate::assemble::Part>> {
        use anyhow::Context as _;
        let fetches = guests.iter().map(|(slot, reference)| async move {
            let (digest, wasm) = fetch(reference, &self.registry, &self.trust, &self.cache)
                .await
                .with_context(|| format!("guest {slot} ({reference}) cannot be loaded"))?;
            Ok(crate::assemble::Part {
                slot: slot.clone(),
                origin: reference.at(&digest).to_string(),
                source: crate::assemble::Source::Guest(wasm.into()),
            })
        });
        futures::future::join_all(fetches).await
    }
}

/// Fetch `guest`: resolve it to a digest once, check its signature against `trust`, pull it by
/// that digest, and keep it in `cache`. A digest verified and pulled before comes from the cache,
/// its signature checked again against `trust`; so does the last one when the registry cannot
/// be reached. The digest and the component.
pub async fn fetch(
    guest: &GuestRef,
    registry: &Registry,
    trust: &Trust,
    cache: &Cache,
) -> anyhow::Result<(String, Vec<u8>)> {
    let digest = match registry.resolve(guest).await {
        Ok(digest) => digest,
        Err(error) => {
            return match cache.load(guest, trust) {
                Ok((digest, wasm)) => {
                    tracing::warn!(
                        "{error}; using the cached copy of {}, its signature checked again",
                        guest.at(&digest)
                    );
                    Ok((digest, wasm))
                }
                Err(cached) => Err(error.context(format!("and no usable cached copy ({cached})"))),
            };
        }
    };
    // Verified and pulled before at this digest: the cached signature (checked against today's
    // keys) and component (checked against its digest) are as good as the registry's.
    if let Ok((cached, wasm)) = cache.load(guest, trust)
        && cached == digest
    {
        return Ok((digest, wasm));
    }
    let signature = match registry.verify(guest, &digest, &trust.keys).await {
        Ok((signature, _)) => Some(signature),
        Err(error @ SignatureError::Unsigned(..)) if trust.allow_unsigned => {
            tracing::warn!("{error}; loaded anyway (--insecure-allow-unsigned)");
            None
        }
        Err(error) => return Err(error.into()),
    };
    // Pulled before at this digest: the cached component, checked against its digest.
    let cached = cache
        .read(guest)
        .filter(|record| record.digest == digest)
        .and_then(|record| cache.component(&record.component));
    let wasm = match cached {
        Some(wasm) => wasm,
        None => registry.pull(guest, &digest).await?,
    };
    let record = Record {
        reference: guest.to_string(),
        digest: digest.clone(),
        component: digest_of(&wasm),
        signature,
    };
    if let Err(error) = cache.store(&record, &wasm, guest) {
        tracing::warn!(%error, "cannot cache {guest}; the next start needs the registry");
    }
    Ok((digest, wasm))
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

    /// A keyed signature that cosign made (a published test vector of sigstore-rs, taken from
    /// a cosign run): the payload as cosign wrote it, its base64 signature, and the public key.
    #[test]
    fn a_signature_made_by_cosign_verifies() {
        use base64::Engine as _;
        use p256::pkcs8::DecodePublicKey as _;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(
            "-----BEGIN PUBLIC KEY-----\n\
             MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu\n\
             OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==\n\
             -----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let digest = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
        let signature = Signature {
            payload: format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"registry-testing.svc.lan/busybox"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
            .into_bytes(),
            der: base64::engine::general_purpose::STANDARD
                .decode("MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=")
                .unwrap(),
        };
        let other = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let other_key = *other.verifying_key();
        assert_eq!(signature.check(digest, &[other_key, key]), Ok(1));
        assert_eq!(signature.check(digest, &[other_key]), Err(None));
        assert_eq!(
            signature.check(DIGEST, &[key]),
            Err(Some(digest.to_string()))
        );
    }
}
