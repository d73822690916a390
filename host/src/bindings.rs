//! The WIT contract, as Rust types and the functions to call a guest. The model the host builds
//! *is* these types: there is no second copy to keep in step.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "guest",
    additional_derives: [PartialEq, Eq],
});

pub use self::wasmconfd::haproxy::host::Level;
pub use self::wasmconfd::haproxy::types::*;

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
pub const WORLD: &str = "wasmconfd:haproxy/guest@0.1.0";

#[cfg(test)]
mod tests {
    #[test]
    fn the_world_name_is_the_one_in_the_wit() {
        let wit = include_str!("../../wit/world.wit");
        let (package, world) = super::WORLD.split_once('/').unwrap();
        let (world, version) = world.split_once('@').unwrap();
        assert!(wit.contains(&format!("package {package}@{version};")));
        assert!(wit.contains(&format!("world {world} {{")));
    }
}
