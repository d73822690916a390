//! Putting a configuration in place and making HAProxy use it, without ever making things worse:
//! nothing is touched when nothing changed; a configuration HAProxy rejects never replaces the
//! live one; the live file is replaced atomically and the previous one kept beside it.

use crate::assemble::Assembled;
use crate::files::with_suffix;
use crate::install::{Staged, installed_maps};
use crate::runtime_api::RuntimeError;
use crate::validate::{self, CheckError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// python-confd's default.
pub const DEFAULT_RELOAD_COMMAND: &str = "systemctl reload-or-restart haproxy";

/// How HAProxy is told to load a new configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// A shell command (`sh -c`), e.g. `systemctl reload haproxy`.
    Command(String),
    /// `reload` on the master CLI socket of `haproxy -W -S <socket>`, verified with `show proc`.
    MasterSocket(PathBuf),
    /// A signal to the process whose pid is in a file (USR2 reloads a master-worker HAProxy).
    Signal { pid_file: PathBuf, signal: Signal },
}

/// Signals that reload HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Usr2,
    Hup,
}

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
        validate::check(&self.check_command, &staged.config(), assembled, timeout)?;

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
        match &self.reload {
            Reload::Command(command) => run_reload_command(command, self.command_timeout),
            Reload::MasterSocket(socket) => reload_through_master(socket, Duration::from_secs(10)),
            Reload::Signal { pid_file, signal } => send_signal(pid_file, *signal),
        }
        .map_err(ApplyError::Reload)?;
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

fn run_reload_command(command: &str, timeout: Duration) -> Result<(), String> {
    let finished = crate::process::run(Command::new("sh").arg("-c").arg(command), timeout)
        .map_err(|e| format!("`{command}`: {e}"))?;
    if finished.status.success() {
        return Ok(());
    }
    let said = finished.output.trim();
    Err(format!("`{command}` failed ({}): {said}", finished.status))
}

fn send_signal(pid_file: &Path, signal: Signal) -> Result<(), String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read pid file {}: {e}", pid_file.display()))?;
    // A master-worker HAProxy writes the master's pid first.
    let pid: i32 = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("pid file {} holds no pid", pid_file.display()))?;
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| format!("pid file {} holds pid {pid}", pid_file.display()))?;
    let signal = match signal {
        Signal::Usr2 => rustix::process::Signal::USR2,
        Signal::Hup => rustix::process::Signal::HUP,
    };
    rustix::process::kill_process(pid, signal)
        .map_err(|e| format!("cannot signal pid {pid:?} from {}: {e}", pid_file.display()))
}

/// The master's reload counters from `show proc`: (reloads, failed reloads).
pub fn master_reloads(show_proc: &str) -> Option<(u64, u64)> {
    // `29658  master  3 [failed: 1]  0d00h00m14s  2.6.12`
    let line = show_proc
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("master"))?;
    let mut words = line.split_whitespace().skip(2);
    let reloads = words.next()?.parse().ok()?;
    let failed = match (words.next(), words.next()) {
        (Some("[failed:"), Some(n)) => n.trim_end_matches(']').parse().ok()?,
        _ => 0,
    };
    Some((reloads, failed))
}

/// Ask the master to reload and wait until `show proc` says it did, and that it did not fail
/// (HAProxy 2.6 answers nothing to `reload` itself).
fn reload_through_master(socket: &Path, timeout: Duration) -> Result<(), String> {
    let show_proc = || {
        crate::runtime_api::command(socket, "show proc")
            .ok()
            .and_then(|answer| master_reloads(&answer))
    };
    let (reloads, failed) =
        show_proc().ok_or_else(|| format!("no HAProxy master answers on {}", socket.display()))?;
    crate::runtime_api::command(socket, "reload")
        .map_err(|e| format!("cannot send reload to {}: {e}", socket.display()))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        match show_proc() {
            Some((now, failed_now)) if now > reloads && failed_now > failed => {
                return Err("HAProxy's master refused the configuration and kept the running one; see HAProxy's log".into());
            }
            Some((now, _)) if now > reloads => return Ok(()),
            _ => {}
        }
    }
    Err(format!(
        "HAProxy's master on {} did not reload within {timeout:?}",
        socket.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_masters_reload_counters() {
        let show_proc = "#<PID>          <type>          <reloads>       <uptime>        <version>\n\
                         29658           master          3 [failed: 1]   0d00h00m14s     2.6.12-1+deb12u4\n\
                         # workers\n30120           worker          1               0d00h00m06s     2.6.12\n";
        assert_eq!(master_reloads(show_proc), Some((3, 1)));
        assert_eq!(master_reloads("1 master 0 0d00h00m01s 2.4\n"), Some((0, 0)));
        assert_eq!(master_reloads("garbage"), None);
    }
}
