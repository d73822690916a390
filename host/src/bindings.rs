//! The WIT contract, as Rust types and the functions to call a guest. The model the host builds
//! *is* these types: there is no second copy to keep in step.
//!
//! Two versions load: the current one (`wit/`), and 0.1.0 (`wit/0.1.0/`), whose types are the
//! same records and so are these very types; only its world (no `describe`) and its `host`
//! interface are its own.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "guest",
    additional_derives: [PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize],
});

/// Guests built for `wasmconfd:haproxy@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "guest",
        with: {
            "wasmconfd:haproxy/types@0.1.0": super::wasmconfd::haproxy::types,
        },
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

pub use self::wasmconfd::haproxy::host::Level;
pub use self::wasmconfd::haproxy::types::*;

/// A guest's input as the host holds it: the WIT record `cluster`, with the services shared
/// with the model rather than copied for each guest (an `Arc` lowers as what it points to).
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct Input {
    pub context: Context,
    pub services: Vec<std::sync::Arc<Service>>,
}

impl SectionKind {
    /// The keyword that starts a section of this kind.
    pub fn keyword(self) -> &'static str {
        match self {
            SectionKind::Global => "global",
            SectionKind::Defaults => "defaults",
            SectionKind::Frontend => "frontend",
            SectionKind::Backend => "backend",
            SectionKind::Listen => "listen",
            SectionKind::Resolvers => "resolvers",
            SectionKind::Peers => "peers",
            SectionKind::Userlist => "userlist",
            SectionKind::HttpErrors => "http-errors",
            SectionKind::Ring => "ring",
            SectionKind::Cache => "cache",
            SectionKind::Mailers => "mailers",
            SectionKind::Program => "program",
        }
    }
}

impl Section {
    /// How messages name the section: `backend NAME`, `global`.
    pub fn title(&self) -> String {
        match &self.name {
            Some(name) => format!("{} {name}", self.kind.keyword()),
            None => self.kind.keyword().to_string(),
        }
    }
}

/// The world guests are built for, as its WIT names it.
pub const WORLD: &str = "wasmconfd:haproxy/guest@0.2.0";

/// The earlier world this host still loads.
pub const WORLD_0_1: &str = "wasmconfd:haproxy/guest@0.1.0";

#[cfg(test)]
mod tests {
    #[test]
    fn the_world_names_are_the_ones_in_the_wit() {
        for (name, wit) in [
            (super::WORLD, include_str!("../../wit/world.wit")),
            (super::WORLD_0_1, include_str!("../../wit/0.1.0/world.wit")),
        ] {
            let (package, world) = name.split_once('/').unwrap();
            let (world, version) = world.split_once('@').unwrap();
            assert!(wit.contains(&format!("package {package}@{version};")));
            assert!(wit.contains(&format!("world {world} {{")));
        }
    }
}
