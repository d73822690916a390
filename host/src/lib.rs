//! wasmconfd keeps HAProxy in front of Kubernetes configured by sandboxed WebAssembly guests.
//!
//! The pipeline runs in one direction, one module per stage:
//! [`source`] (Kubernetes objects: snapshot files, the API and its watch) -> [`model`] (validated
//! WIT records) -> [`scope`] (what each guest sees and may do) -> [`guests`] (where parts come
//! from, and the sandbox) -> [`claims`] (one owner for each name and listening address) ->
//! [`policy`] (what one guest's output may hold) -> [`assemble`] (configuration text) -> [`apply`]
//! (HAProxy's own check, install, the Runtime API or a reload).
//! [`render`] runs the middle stages on one model; [`daemon`] runs it all on every change in
//! the cluster, with the blast-radius [`guard`], and reports through [`status`]; [`cli`] is the
//! command line. See `docs/architecture.md`.

pub mod apply;
pub mod assemble;
pub mod bindings;
pub mod claims;
pub mod cli;
pub mod daemon;
pub mod files;
pub mod fragment;
pub mod guard;
pub mod guests;
pub mod in_step;
pub mod model;
pub mod parallel;
pub mod policy;
pub mod render;
pub mod scaffold;
pub mod scope;
pub mod source;
pub mod status;
pub mod tls;
