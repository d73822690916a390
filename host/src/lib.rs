//! wasmconfd keeps HAProxy in front of Kubernetes configured by sandboxed WebAssembly guests.
//!
//! The pipeline runs in one direction, one module per stage:
//! [`source`] (Kubernetes objects) -> [`model`] (validated WIT records) -> [`guests`] (sandboxed
//! components, driven by [`render`]) -> [`assemble`] (configuration text) -> [`validate`]
//! (HAProxy's own check) -> [`apply`] (install atomically, reload).

pub mod apply;
pub mod assemble;
pub mod bindings;
pub mod changes;
pub mod cli;
pub mod daemon;
pub mod files;
pub mod guests;
pub mod model;
pub mod render;
pub mod runtime_api;
pub mod source;
pub mod validate;
