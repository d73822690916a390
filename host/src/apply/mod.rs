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
use crate::assemble::{CERTS_DIR, MAPS_DIR};
use crate::files::with_suffix;
use check::CheckError;
use install::{Staged, installed};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the new configuration was not installed: {0}")]
    Check(#[from] CheckError),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("reload failed: {0}")]
    Reload(String),
}

impl ApplyError {
    /// This failure with what to change, when it is on this host ([`ApplyError::host_fix`]):
    /// what the log and `/readyz` say.
    pub fn host_problem(&self, applier: &Applier) -> Option<String> {
        Some(format!("{self}: {}", self.host_fix(applier)?))
    }

    /// For a failure on this host rather than in the configuration (a file that cannot be
    /// written, a command that cannot run or fails), what the operator can change; trying the
    /// same again later may then work. `None` when HAProxy rejected the configuration: trying it
    /// again cannot help, a change in the cluster may.
    pub fn host_fix(&self, applier: &Applier) -> Option<String> {
        let dir = applier.target.parent().unwrap_or(Path::new("/")).display();
        Some(match self {
            ApplyError::Check(CheckError::Rejected { .. }) => return None,
            ApplyError::Check(CheckError::Run { command, .. } | CheckError::Empty { command }) => {
                format!(
                    "make `{command}` run on this host (is HAProxy installed?), or set --check-cmd"
                )
            }
            ApplyError::Check(CheckError::Stage(_)) => {
                "make the temporary directory ($TMPDIR) writable".into()
            }
            ApplyError::Write { error, .. } => match error.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    format!(
                        "give wasmconfd's user write access to {dir}, or point --haproxy-conf at \
                         a file in a directory it may write"
                    )
                }
                _ => format!("fix {dir} for wasmconfd to write there"),
            },
            ApplyError::Reload(_) => match &applier.reload {
                Reload::Command(command) if command == DEFAULT_RELOAD_COMMAND => {
                    "the default reload command needs systemd and a haproxy unit; without them, \
                     run HAProxy in master-worker mode (`haproxy -W -S /run/haproxy-master.sock \
                     -f CONFIG`) and pass `--reload-method master-socket --master-socket \
                     /run/haproxy-master.sock`"
                        .into()
                }
                Reload::Command(_) => "make the reload command (--reload-cmd) work".into(),
                Reload::MasterSocket(socket) => format!(
                    "run HAProxy in master-worker mode with that socket: `haproxy -W -S {}`",
                    socket.display()
                ),
                Reload::Signal { pid_file, .. } => format!(
                    "run HAProxy with its pid in that file: `haproxy -p {}`",
                    pid_file.display()
                ),
            },
        })
    }
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

/// What a configuration needs, found before anything changes.
pub enum Prepared {
    /// It is installed and loaded.
    Unchanged,
    /// It is installed, but HAProxy never confirmed a reload of it (one failed, or the process
    /// stopped first): the running configuration may be older than the file.
    ReloadOwed,
    /// It is staged beside the live files and HAProxy's check passed.
    Staged(Staged),
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
        match self.prepare(assembled)? {
            Prepared::Unchanged => Ok(Applied::Unchanged),
            Prepared::ReloadOwed => self.reload().map(|()| Applied::Reloaded),
            Prepared::Staged(staged) => self.install(staged, false),
        }
    }

    /// What `assembled` needs: nothing, a reload owed, or, staged and checked, an install.
    pub fn prepare(&self, assembled: &Assembled) -> Result<Prepared, ApplyError> {
        if self.holds(assembled) {
            if self.reload_pending() {
                tracing::info!(path = %self.target.display(), "the installed configuration was never reloaded");
                return Ok(Prepared::ReloadOwed);
            }
            return Ok(Prepared::Unchanged);
        }
        // Everything is written and checked beside the live files before any of them changes.
        let staged = Staged::new(&self.target, assembled).map_err(write_error(&self.target))?;
        let timeout = self.command_timeout;
        check::check(&self.check_command, &staged.config(), assembled, timeout)?;
        Ok(Prepared::Staged(staged))
    }

    /// Whether the files on disk are `assembled`: the configuration, its map files and its
    /// certificates.
    pub fn holds(&self, assembled: &Assembled) -> bool {
        self.holds_config(assembled) && installed(&self.target, CERTS_DIR) == assembled.certs
    }

    /// Whether the files on disk are `assembled`'s configuration and map files, whatever the
    /// certificates.
    pub fn holds_config(&self, assembled: &Assembled) -> bool {
        install::file_holds(&self.target, assembled.config.as_bytes())
            && installed(&self.target, MAPS_DIR) == assembled.maps
    }

    /// Put `staged` in place, then reload, unless the running HAProxy already has the change
    /// (`changed_at_runtime`, through the Runtime API).
    pub fn install(&self, staged: Staged, changed_at_runtime: bool) -> Result<Applied, ApplyError> {
        if !changed_at_runtime {
            // Until a reload succeeds, the file on disk is ahead of the running HAProxy.
            std::fs::write(self.pending_marker(), b"")
                .map_err(write_error(&self.pending_marker()))?;
        }
        staged.commit().map_err(write_error(&self.target))?;
        tracing::info!(path = %self.target.display(), "configuration installed");
        if changed_at_runtime {
            return Ok(Applied::Runtime);
        }
        self.reload()?;
        Ok(Applied::Reloaded)
    }

    /// Whether HAProxy may not be running the installed files: a reload is owed.
    pub fn reload_pending(&self) -> bool {
        self.pending_marker().exists()
    }

    /// Tell HAProxy to load the configuration on disk.
    pub fn reload(&self) -> Result<(), ApplyError> {
        reload::reload(&self.reload, self.command_timeout).map_err(ApplyError::Reload)?;
        let _ = std::fs::remove_file(self.pending_marker());
        tracing::info!(method = %self.reload, "HAProxy reloaded");
        Ok(())
    }

    /// `<target>.reload-pending`: present from installing a file until HAProxy reloaded it, so
    /// a restarted wasmconfd knows to reload a file that is already in place.
    pub fn pending_marker(&self) -> PathBuf {
        with_suffix(&self.target, ".reload-pending")
    }
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError {
    let path = path.display().to_string();
    move |error| ApplyError::Write { path, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_on_the_host_says_what_to_change_and_a_rejection_does_not() {
        let applier = |reload| Applier {
            target: PathBuf::from("/etc/haproxy/haproxy.cfg"),
            check_command: "haproxy -c -f".into(),
            reload,
            command_timeout: Duration::from_secs(1),
        };
        let failed = ApplyError::Reload("`systemctl reload-or-restart haproxy` failed".into());
        let fix = failed
            .host_fix(&applier(Reload::Command(DEFAULT_RELOAD_COMMAND.into())))
            .unwrap();
        assert!(
            fix.contains("haproxy -W -S") && fix.contains("--reload-method master-socket"),
            "{fix}"
        );
        let denied = ApplyError::Write {
            path: "/etc/haproxy/haproxy.cfg".into(),
            error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let fix = denied
            .host_fix(&applier(Reload::Command("true".into())))
            .unwrap();
        assert!(fix.contains("write access to /etc/haproxy"), "{fix}");

        let status = std::process::Command::new("false").status().unwrap();
        let rejected = ApplyError::Check(CheckError::Rejected {
            status,
            output: "unknown keyword".into(),
        });
        assert_eq!(
            rejected.host_fix(&applier(Reload::Command("true".into()))),
            None
        );
    }
}
