//! The WIT contract, as Rust types and the functions to call a guest. The model the host builds
//! *is* these types: there is no second copy to keep in step.
//!
//! Three versions load: the current one (`wit/`), 0.2.0 (`wit/0.2.0/`), whose `cluster` has no
//! `tls`, and 0.1.0 (`wit/0.1.0/`), whose world has no `describe`. Every other record is the
//! same in all three, so a guest of any version is handed the same services and returns the
//! same [`Fragment`]: only the record around the services differs ([`Input::older`]).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "guest",
    additional_derives: [PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize],
});

/// Guests built for `wasmconfd:haproxy@0.2.0`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "guest",
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

/// Guests built for `wasmconfd:haproxy@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "guest",
        with: {
            "wasmconfd:haproxy/types@0.1.0": super::v0_2::wasmconfd::haproxy::types,
        },
    });

    pub use self::wasmconfd::haproxy::host::Level;
}

pub use self::wasmconfd::haproxy::host::Level;
pub use self::wasmconfd::haproxy::types::*;

/// The WIT `fragment`, as a guest returns it; the host holds it as [`crate::fragment::Fragment`].
pub type WitFragment = self::wasmconfd::haproxy::types::Fragment;

/// A guest's input as the host holds it: the WIT record `cluster`, with the services shared
/// with the model rather than copied for each guest (an `Arc` lowers as what it points to).
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct Input {
    pub context: Context,
    pub services: Vec<std::sync::Arc<Service>>,
    pub tls: Tls,
}

/// The `cluster` record of 0.2.0 and 0.1.0: no `tls`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct OlderInput<'a> {
    pub context: &'a Context,
    pub services: &'a [std::sync::Arc<Service>],
}

impl Input {
    /// This input as a guest built for 0.2.0 or 0.1.0 takes it: without the certificates.
    pub fn older(&self) -> OlderInput<'_> {
        OlderInput {
            context: &self.context,
            services: &self.services,
        }
    }
}

impl From<v0_2::Description> for Description {
    fn from(old: v0_2::Description) -> Self {
        Description {
            servers_apart: false,
            protos: old.protos,
            settings: old.settings.map(|settings| {
                settings
                    .into_iter()
                    .map(|s| SettingInfo {
                        key: s.key,
                        help: s.help,
                    })
                    .collect()
            }),
        }
    }
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

impl SectionKind {
    /// A backend or listen section: one that has servers.
    pub fn has_servers(self) -> bool {
        matches!(self, SectionKind::Backend | SectionKind::Listen)
    }
}

impl Section {
    /// Whether `other` is this section by kind and name, whatever its directives.
    pub fn same_title(&self, other: &Section) -> bool {
        self.kind == other.kind && self.name == other.name
    }

    /// How messages name the section: `backend NAME`, `global`.
    pub fn title(&self) -> String {
        match &self.name {
            Some(name) => format!("{} {name}", self.kind.keyword()),
            None => self.kind.keyword().to_string(),
        }
    }
}

/// The world guests are built for, as its WIT names it.
pub const WORLD: &str = "wasmconfd:haproxy/guest@0.3.0";

/// The earlier worlds this host still loads.
pub const WORLD_0_2: &str = "wasmconfd:haproxy/guest@0.2.0";
pub const WORLD_0_1: &str = "wasmconfd:haproxy/guest@0.1.0";

#[cfg(test)]
mod tests {
    #[test]
    fn the_world_names_are_the_ones_in_the_wit() {
        for (name, wit) in [
            (super::WORLD, include_str!("../../wit/world.wit")),
            (super::WORLD_0_2, include_str!("../../wit/0.2.0/world.wit")),
            (super::WORLD_0_1, include_str!("../../wit/0.1.0/world.wit")),
        ] {
            let (package, world) = name.split_once('/').unwrap();
            let (world, version) = world.split_once('@').unwrap();
            assert!(wit.contains(&format!("package {package}@{version};")));
            assert!(wit.contains(&format!("world {world} {{")));
        }
    }
}
