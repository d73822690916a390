//! Fetching guests: verified once, then kept by content with their signatures.

use super::{GuestRef, Registry, Signature, SignatureError, Trust, digest_of};

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
                if signature.check(guest, &record.digest, &trust.keys).is_err() {
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
