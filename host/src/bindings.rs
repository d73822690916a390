//! The WIT contract, as Rust types and the functions to call a guest. The model the host builds
//! *is* these types: there is no second copy to keep in step.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "guest",
    additional_derives: [PartialEq, Eq],
});

pub use self::wasmconfd::haproxy::host::Level;
pub use self::wasmconfd::haproxy::types::*;

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
