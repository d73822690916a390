//! Guests as OCI artifacts: references (`oci://REGISTRY/REPOSITORY:TAG@sha256:DIGEST`), pushing
//! and pulling Wasm artifacts, cosign-compatible keyed signatures checked offline, and a
//! content-addressed cache that keeps the verified signature beside each component.

mod cache;
mod reference;
mod registry;
mod signature;

pub use cache::{Cache, Remote, fetch};
pub use reference::GuestRef;
pub use registry::{
    CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, OLDER_LAYER_MEDIA_TYPE, Registry, RegistryAccess,
    RegistryLimits, read_logins,
};
pub use signature::{Signature, SignatureError, Trust, read_public_key, read_signing_key};

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
