//! Log through the host, tagged with the guest's name. In native tests the messages go to
//! stderr and are kept for [`crate::testing::take_logs`].

use crate::wit::wasmconfd::haproxy::host::Level;

fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::wit::wasmconfd::haproxy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// Detail for debugging a guest.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Normal operation.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Something was skipped or looks wrong; the render goes on.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Something failed; the render goes on without it.
pub fn error(message: &str) {
    log(Level::Error, message);
}
