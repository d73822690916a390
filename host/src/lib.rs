//! wasmconfd keeps HAProxy in front of Kubernetes configured by sandboxed WebAssembly guests.
//!
//! The pipeline runs in one direction, one module per stage:
//! [`source`] (Kubernetes objects) -> [`model`] (validated WIT records) -> [`guests`] (sandboxed
//! components, driven by [`render`]; [`claims`] gives each listening address one owner) ->
//! [`assemble`] (configuration text) -> [`validate`]
//! (HAProxy's own check) -> [`apply`] (install atomically, reload), or [`changes`] and
//! [`runtime_api`] (servers and map entries changed in the running HAProxy, no reload).
//! [`daemon`] runs it all on every change in the cluster and reports through [`status`].

pub mod apply;
pub mod assemble;
pub mod bindings;
pub mod claims;
pub mod cli;
pub mod daemon;
pub mod files;
pub mod guests;
pub mod model;
pub mod oci;
pub mod render;
pub mod scaffold;
pub mod source;
pub mod status;
