//! Putting a configuration in place and making HAProxy use it, without ever making things worse:
//! nothing is touched when nothing changed; a configuration HAProxy rejects never replaces the
//! live one; the live file is replaced atomically and the previous one kept beside it.
//!
//! [`check`] asks HAProxy, [`install`] puts files on disk, [`plan`] tells a change HAProxy's
//! Runtime API can make ([`runtime_api`]) from one that needs a [`reload`]; [`process`] runs the
//! operator's commands with a time limit.

pub mod check;
pub mod install;
pub mod plan;
pub mod process;
pub mod reload;
pub mod runtime_api;

pub use reload::{DEFAULT_RELOAD_COMMAND, Reload, Signal};

use crate::assemble::Assembled;
use crate::files::with_suffix;
use check::CheckError;
use install::{Staged, installed_maps};
use runtime_api::RuntimeError;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the new configuration was not installed: {0}")]
    Check(#[from] CheckError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("reload failed: {0}")]
    Reload(String),
}

/// What [`Applier::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The files on disk already hold this configuration: nothing written, checked or reloaded.
    Unchanged,
    /// Checked, changed in the running HAProxy through its Runtime API, and written; no reload.
    Runtime,
    /// Checked, written and reloaded.
    Reloaded,
}

/// Installs configurations at one target path.
#[derive(Debug, Clone)]
pub struct Applier {
    pub target: PathBuf,
    pub check_command: String,
    pub reload: Reload,
    /// How long the check command, and a reload command, may take.
    pub command_timeout: Duration,
}

impl Applier {
    /// Check `assembled` beside the target, install it atomically (keeping the previous file as
    /// `<target>.prev`) and reload. A missing target is a first install.
    ///
    /// When the check fails the live configuration and its maps stay as they were. When the
    /// reload fails, the files are in place and [`Applier::reload`] can be retried; until one
    /// succeeds, applying the same configuration reloads again instead of reporting it unchanged,
    /// even from a new process.
    pub fn apply(&self, assembled: &Assembled) -> Result<Applied, ApplyError> {
        self.install(assembled, None)
    }

    /// Like [`Applier::apply`], but the running HAProxy is changed by `runtime` (Runtime API
    /// commands, read back) instead of a reload, after the check passed and before the files
    /// are replaced. If `runtime` fails, or HAProxy may not be running the installed files (a
    /// reload is pending), it reloads instead.
    pub fn apply_hitless(
        &self,
        assembled: &Assembled,
        runtime: &dyn Fn() -> Result<(), RuntimeError>,
    ) -> Result<Applied, ApplyError> {
        self.install(assembled, Some(runtime))
    }

    fn install(
        &self,
        assembled: &Assembled,
        runtime: Option<&dyn Fn() -> Result<(), RuntimeError>>,
    ) -> Result<Applied, ApplyError> {
        let live = std::fs::read_to_string(&self.target).ok();
        if live.as_deref() == Some(assembled.config.as_str())
            && installed_maps(&self.target) == assembled.maps
        {
            if !self.pending_marker().exists() {
                return Ok(Applied::Unchanged);
            }
            // Installed earlier, but HAProxy never confirmed a reload (it failed, or the
            // process stopped first): the running configuration may be older than the file.
            tracing::info!(path = %self.target.display(), "the installed configuration was never reloaded");
            self.reload()?;
            return Ok(Applied::Reloaded);
        }

        // Everything is written and checked beside the live files before any of them changes.
        let write_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| ApplyError::Write { path, source }
        };
        let staged = Staged::new(&self.target, assembled).map_err(write_error(&self.target))?;
        let timeout = self.command_timeout;
        check::check(&self.check_command, &staged.config(), assembled, timeout)?;

        let hitless = match runtime {
            Some(_) if self.pending_marker().exists() => {
                tracing::info!("a reload is pending, so the change is made by reloading");
                false
            }
            Some(runtime) => match runtime() {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "the Runtime API did not make the change; reloading instead");
                    false
                }
            },
            None => false,
        };

        if !hitless {
            // Until a reload succeeds, the file on disk is ahead of the running HAProxy.
            std::fs::write(self.pending_marker(), b"")
                .map_err(write_error(&self.pending_marker()))?;
        }
        staged.commit().map_err(write_error(&self.target))?;
        tracing::info!(path = %self.target.display(), "configuration installed");
        if hitless {
            return Ok(Applied::Runtime);
        }
        self.reload()?;
        Ok(Applied::Reloaded)
    }

    /// Tell HAProxy to load the configuration on disk.
    pub fn reload(&self) -> Result<(), ApplyError> {
        reload::reload(&self.reload, self.command_timeout).map_err(ApplyError::Reload)?;
        let _ = std::fs::remove_file(self.pending_marker());
        tracing::info!(method = ?self.reload, "HAProxy reloaded");
        Ok(())
    }

    /// `<target>.reload-pending`: present from installing a file until HAProxy reloaded it, so
    /// a restarted wasmconfd knows to reload a file that is already in place.
    pub fn pending_marker(&self) -> PathBuf {
        with_suffix(&self.target, ".reload-pending")
    }
}
