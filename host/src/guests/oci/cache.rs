//! Fetching guests: verified once, then kept by content with their signatures.

use super::{GuestRef, Registry, Signature, SignatureError, Trust, digest_of};

/// What the cache remembers of a reference: the manifest digest it resolved to and the
/// signature that was verified for it (none for an unsigned guest that was allowed). The
/// component is found through the manifest, so the record names nothing that runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    reference: String,
    digest: String,
    signature: Option<Signature>,
}

/// A content-addressed store of pulled guests under `dir`: `blobs/sha256/<hex>` (manifests and
/// components, each checked against its digest on every read) and `refs/<sha256 of the
/// reference>.json` (the digest and verified signature), so a restart works while the registry
/// is down.
///
/// Nothing in it is trusted for being there: a load checks the signature of the record's
/// digest against today's keys and this repository, the manifest against that digest, and the
/// component against the digest the manifest names. Whoever can write the cache can make a
/// guest fail to load, never make an unsigned one run.
pub struct Cache {
    dir: std::path::PathBuf,
}

impl Cache {
    pub fn new(dir: std::path::PathBuf) -> Cache {
        Cache { dir }
    }

    fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn record_path(&self, guest: &GuestRef) -> std::path::PathBuf {
        let key = digest_of(guest.to_string().as_bytes());
        self.dir
            .join("refs")
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    fn store_blob(&self, blob: &[u8]) -> std::io::Result<()> {
        crate::files::write_atomically(&self.blob_path(&digest_of(blob)), blob)
    }

    fn store_record(&self, guest: &GuestRef, record: &Record) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("a record serializes");
        crate::files::write_atomically(&self.record_path(guest), &json)
    }

    /// The blob with digest `digest`, if the cache holds it intact.
    fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(digest)).ok()?;
        (digest_of(&bytes) == digest).then_some(bytes)
    }

    /// The component of the artifact whose manifest has digest `digest`: the manifest and the
    /// component it names, each checked against its digest.
    fn component(&self, guest: &GuestRef, digest: &str) -> anyhow::Result<Vec<u8>> {
        let manifest = self
            .blob(digest)
            .ok_or_else(|| anyhow::anyhow!("the cached manifest is missing or damaged"))?;
        let layer = super::registry::wasm_layer(guest, &manifest)?;
        self.blob(&layer.digest)
            .ok_or_else(|| anyhow::anyhow!("the cached component is missing or damaged"))
    }

    /// The cached component of `guest`, with its signature checked again against `trust` and
    /// `guest`'s repository, and its bytes against the digests the signed manifest names.
    fn load(&self, guest: &GuestRef, trust: &Trust) -> anyhow::Result<(String, Vec<u8>)> {
        let record: Record = std::fs::read(self.record_path(guest))
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| anyhow::anyhow!("nothing is cached for it"))?;
        if guest.digest.as_ref().is_some_and(|d| *d != record.digest) {
            anyhow::bail!(
                "the cached record is for another digest ({})",
                record.digest
            );
        }
        match &record.signature {
            Some(signature) => {
                if let Err(refusal) = signature.check(guest, &record.digest, &trust.keys) {
                    anyhow::bail!("its cached signature does not count: {refusal}");
                }
            }
            None if trust.allow_unsigned => {}
            None => anyhow::bail!("the cached copy is unsigned"),
        }
        let wasm = self.component(guest, &record.digest)?;
        crate::files::touch(&self.record_path(guest));
        Ok((record.digest, wasm))
    }

    /// Remove the records of references not loaded or pulled since `cutoff`, then the blobs
    /// older than that which no record left names (its manifest, and the layers and config
    /// that manifest names): (records, blobs) removed.
    pub fn prune(
        &self,
        cutoff: std::time::SystemTime,
    ) -> std::io::Result<(crate::files::Removed, crate::files::Removed)> {
        let mut records = crate::files::Removed::default();
        let mut named = std::collections::HashSet::new();
        for (path, meta) in crate::files::files_in(&self.dir.join("refs"))? {
            let record: Option<Record> = std::fs::read(&path)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok());
            match record {
                Some(record) if meta.modified()? >= cutoff => {
                    named.extend(self.named_by(&record.digest));
                    named.insert(record.digest);
                }
                _ => records.remove(&path, &meta)?,
            }
        }
        let mut blobs = crate::files::Removed::default();
        for (path, meta) in crate::files::files_in(&self.dir.join("blobs/sha256"))? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !named.contains(&format!("sha256:{name}")) && meta.modified()? < cutoff {
                blobs.remove(&path, &meta)?;
            }
        }
        Ok((records, blobs))
    }

    /// The digests the cached manifest `digest` names: its config and layers.
    fn named_by(&self, digest: &str) -> Vec<String> {
        let Some(manifest) = self
            .blob(digest)
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        else {
            return Vec::new();
        };
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        std::iter::once(&manifest["config"])
            .chain(&layers)
            .filter_map(|descriptor| descriptor["digest"].as_str().map(String::from))
            .collect()
    }
}

/// What fetching guests from registries takes.
pub struct Remote {
    pub registry: Registry,
    pub trust: Trust,
    pub cache: Cache,
}

impl Remote {
    /// Fetch `guests` concurrently, each for its slot: the parts that loaded, and the guests
    /// that did not, each with why.
    pub async fn fetch(
        &self,
        guests: &[(String, GuestRef)],
    ) -> (
        Vec<crate::guests::Part>,
        Vec<((String, GuestRef), anyhow::Error)>,
    ) {
        use anyhow::Context as _;
        let fetches = guests.iter().map(|(slot, reference)| async move {
            let (digest, wasm) = fetch(reference, &self.registry, &self.trust, &self.cache)
                .await
                .with_context(|| format!("guest {slot} ({reference}) cannot be loaded"))?;
            Ok(crate::guests::Part {
                slot: slot.clone(),
                origin: reference.at(&digest).to_string(),
                source: crate::guests::Source::Guest(wasm.into()),
            })
        });
        let (mut parts, mut failed) = (Vec::new(), Vec::new());
        for (result, guest) in futures::future::join_all(fetches)
            .await
            .into_iter()
            .zip(guests)
        {
            match result {
                Ok(part) => parts.push(part),
                Err(error) => failed.push((guest.clone(), error)),
            }
        }
        (parts, failed)
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
                Err(cached) => Err(anyhow::anyhow!(
                    "{error:#}; and no cached copy to use instead ({cached})"
                )),
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
    // Pulled before at this digest: the cached manifest and component, checked against it.
    let (wasm, stored) = match cache.component(guest, &digest) {
        Ok(wasm) => (wasm, Ok(())),
        Err(_) => {
            let (manifest, wasm) = registry.pull(guest, &digest).await?;
            let stored = cache
                .store_blob(&manifest)
                .and_then(|()| cache.store_blob(&wasm));
            (wasm, stored)
        }
    };
    let record = Record {
        reference: guest.to_string(),
        digest: digest.clone(),
        signature,
    };
    if let Err(error) = stored.and_then(|()| cache.store_record(guest, &record)) {
        tracing::warn!(%error, "cannot cache {guest}; the next start needs the registry");
    }
    Ok((digest, wasm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn age(path: &std::path::Path, days: u64) {
        let when = SystemTime::now() - Duration::from_secs(days * 86_400);
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(when).unwrap();
    }

    /// A guest fetched lately keeps its record, manifest and component; an old record goes,
    /// and with it the blobs only it named; an old blob nothing names goes; a new one stays.
    #[test]
    fn pruning_keeps_what_recent_guests_need() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        let stored = |guest: &str, component: &[u8]| {
            let guest: GuestRef = format!("oci://r.example/{guest}:v1").parse().unwrap();
            let manifest = serde_json::json!({
                "config": {"digest": digest_of(b"{}")},
                "layers": [{"digest": digest_of(component)}],
            })
            .to_string();
            cache.store_blob(manifest.as_bytes()).unwrap();
            cache.store_blob(component).unwrap();
            let record = Record {
                reference: guest.to_string(),
                digest: digest_of(manifest.as_bytes()),
                signature: None,
            };
            cache.store_record(&guest, &record).unwrap();
            (cache.record_path(&guest), digest_of(manifest.as_bytes()))
        };
        cache.store_blob(b"{}").unwrap();
        let (_, kept_manifest) = stored("kept", b"kept component");
        let (old_record, old_manifest) = stored("old", b"old component");
        cache.store_blob(b"orphan").unwrap();
        cache.store_blob(b"new orphan").unwrap();
        for blob in [
            &old_manifest,
            &digest_of(b"old component"),
            &digest_of(b"orphan"),
        ] {
            age(&cache.blob_path(blob), 30);
        }
        for blob in [
            &kept_manifest,
            &digest_of(b"kept component"),
            &digest_of(b"{}"),
        ] {
            age(&cache.blob_path(blob), 30);
        }
        age(&old_record, 30);

        let cutoff = SystemTime::now() - Duration::from_secs(7 * 86_400);
        let (records, blobs) = cache.prune(cutoff).unwrap();
        assert_eq!((records.files, blobs.files), (1, 3));
        assert!(!old_record.exists());
        for gone in [
            &old_manifest,
            &digest_of(b"old component"),
            &digest_of(b"orphan"),
        ] {
            assert!(cache.blob(gone).is_none(), "{gone}");
        }
        for kept in [
            &kept_manifest,
            &digest_of(b"kept component"),
            &digest_of(b"{}"),
            &digest_of(b"new orphan"),
        ] {
            assert!(cache.blob(kept).is_some(), "{kept}");
        }
    }
}
