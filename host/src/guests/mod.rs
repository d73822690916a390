//! The guests stage: where each part of the configuration comes from ([`parts`], [`oci`] for
//! guests from registries) and the sandbox that runs guest components ([`sandbox`]).
//! [`crate::render`] runs them all on the model.

pub mod oci;
pub mod parts;
pub mod sandbox;

pub use parts::{Part, Source};
pub use sandbox::{Guest, GuestError, Limits, Sandbox};
