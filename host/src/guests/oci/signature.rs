//! cosign-compatible keyed signatures: signing, and checking them offline.

use super::{GuestRef, Registry};

/// cosign's keyed signatures: the simple-signing payload, in a layer of this type, under the tag
/// `sha256-<hex>.sig`, with the signature (base64 DER ECDSA P-256 over the payload) in this
/// annotation.
const SIGNATURE_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The largest signature payload read; cosign's are a few hundred bytes.
const MAX_SIGNATURE_SIZE: u64 = 64 << 10;

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
        "the signatures of {0} were made for another repository ({1}), copied next to this one: \
         refused; sign it in this repository"
    )]
    OtherRepository(String, String),
    #[error(
        "{0} is signed, but by none of the trusted keys: refused; add the signer's public key \
         with --trusted-key, or sign it with a trusted key"
    )]
    UntrustedKey(String),
    #[error("cannot check the signatures of {0}: {1}")]
    Registry(String, String),
    #[error(transparent)]
    TimedOut(#[from] super::registry::TimedOut),
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

/// What a simple-signing payload vouches for, if it is one: (repository, digest).
fn signed_claim(payload: &[u8]) -> Option<(String, String)> {
    let payload: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = &payload["critical"];
    if critical["type"] != SIGNATURE_TYPE {
        return None;
    }
    let repository = critical["identity"]["docker-reference"].as_str()?;
    let digest = critical["image"]["docker-manifest-digest"].as_str()?;
    Some((repository.to_string(), digest.to_string()))
}

/// `registry/repository` as cosign names it in a signature, without a tag or digest, and with
/// Docker Hub's three host names as one.
fn repository_name(reference: &str) -> String {
    let reference = reference.split('@').next().unwrap_or_default();
    let reference = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => reference,
    };
    for hub in ["index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = reference.strip_prefix(hub) {
            return format!("docker.io/{rest}");
        }
    }
    reference.to_string()
}

/// Why a signature does not vouch for a digest in a repository.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    #[error("it signs another digest ({0})")]
    OtherDigest(String),
    #[error("it was made for another repository ({0})")]
    OtherRepository(String),
    #[error("it is not by a trusted key")]
    NoKey,
}

impl Registry {
    /// The signature layers under `digest`'s signature tag, with their payloads; none when the
    /// tag does not exist.
    async fn signature_layers(
        &self,
        guest: &GuestRef,
        digest: &str,
    ) -> Result<Vec<(oci_client::manifest::OciDescriptor, Vec<u8>)>, SignatureError> {
        let signatures = guest.signatures(digest);
        let tag = signatures.reference();
        let registry_error = |e: String| SignatureError::Registry(guest.to_string(), e);
        let what = || format!("cannot read the signatures of {guest}");
        let name = signatures.tag.unwrap_or_default();
        let pulled = self.within(what, async {
            Ok::<_, super::registry::TimedOut>(self.manifest(guest, &name).await)
        });
        let Some(raw) = pulled
            .await?
            .map_err(|e| registry_error(format!("{e:#}")))?
        else {
            return Ok(Vec::new());
        };
        let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| registry_error(format!("its signatures are not an OCI manifest: {e}")))?;
        let mut layers = Vec::new();
        for layer in manifest.layers {
            if layer.media_type != SIGNATURE_LAYER {
                continue;
            }
            let pulled = self.within(what, async {
                Ok::<_, super::registry::TimedOut>(
                    self.pull_bounded(&tag, &layer, (MAX_SIGNATURE_SIZE, "for a signature"))
                        .await,
                )
            });
            let payload = pulled.await?.map_err(|e| registry_error(e.to_string()))?;
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
            .map_err(|e| self.failed(guest, format!("cannot push the signature to {target}"), e))?;
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
        let mut refusal = Refusal::NoKey;
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
            match signature.check(guest, digest, keys) {
                Ok(key) => return Ok((signature, key)),
                // A signature for another digest says more than one by an unknown key.
                Err(Refusal::NoKey) => {}
                Err(other) => refusal = other,
            }
        }
        Err(match refusal {
            Refusal::OtherDigest(signed) => SignatureError::OtherArtifact(pinned, signed),
            Refusal::OtherRepository(signed) => SignatureError::OtherRepository(pinned, signed),
            Refusal::NoKey => SignatureError::UntrustedKey(pinned),
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
    /// Which of `keys` made this signature for `digest` in `guest`'s repository (the payload's
    /// `docker-reference` must name it, as `cosign verify` checks), or why it does not count.
    pub(super) fn check(
        &self,
        guest: &GuestRef,
        digest: &str,
        keys: &[p256::ecdsa::VerifyingKey],
    ) -> Result<usize, Refusal> {
        use p256::ecdsa::signature::Verifier as _;
        let (repository, signed) = signed_claim(&self.payload).ok_or(Refusal::NoKey)?;
        if signed != digest {
            return Err(Refusal::OtherDigest(signed));
        }
        let wanted = repository_name(&format!("{}/{}", guest.registry, guest.repository));
        if repository_name(&repository) != wanted {
            return Err(Refusal::OtherRepository(repository));
        }
        let signature = p256::ecdsa::Signature::from_der(&self.der).map_err(|_| Refusal::NoKey)?;
        keys.iter()
            .position(|key| key.verify(&self.payload, &signature).is_ok())
            .ok_or(Refusal::NoKey)
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

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

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
        let busybox: GuestRef = "oci://registry-testing.svc.lan/busybox:1".parse().unwrap();
        assert_eq!(signature.check(&busybox, digest, &[other_key, key]), Ok(1));
        assert_eq!(
            signature.check(&busybox, digest, &[other_key]),
            Err(Refusal::NoKey)
        );
        assert_eq!(
            signature.check(&busybox, DIGEST, &[key]),
            Err(Refusal::OtherDigest(digest.to_string()))
        );
        let elsewhere: GuestRef = "oci://registry-testing.svc.lan/team/good:1"
            .parse()
            .unwrap();
        assert_eq!(
            signature.check(&elsewhere, digest, &[key]),
            Err(Refusal::OtherRepository(
                "registry-testing.svc.lan/busybox".into()
            ))
        );
    }

    #[test]
    fn repositories_are_compared_without_tags_and_with_docker_hubs_names_as_one() {
        assert_eq!(
            repository_name("r.example.com:5000/team/x:1.0"),
            "r.example.com:5000/team/x"
        );
        assert_eq!(
            repository_name("r.example.com:5000/team/x"),
            "r.example.com:5000/team/x"
        );
        assert_eq!(
            repository_name("r.example.com/x@sha256:00"),
            "r.example.com/x"
        );
        assert_eq!(
            repository_name("index.docker.io/library/x"),
            "docker.io/library/x"
        );
    }
}
