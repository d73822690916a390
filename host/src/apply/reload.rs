//! The ways to make HAProxy load the configuration on disk: a command, its master CLI socket,
//! or a signal.

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

impl std::fmt::Display for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reload::Command(command) => write!(f, "command `{command}`"),
            Reload::MasterSocket(socket) => write!(f, "master socket {}", socket.display()),
            Reload::Signal { pid_file, signal } => {
                let name = match signal {
                    Signal::Usr2 => "SIGUSR2",
                    Signal::Hup => "SIGHUP",
                };
                write!(f, "{name} to the pid in {}", pid_file.display())
            }
        }
    }
}

/// Signals that reload HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Usr2,
    Hup,
}

/// Tell HAProxy to load the configuration on disk, by `method`; a command may take `timeout`.
pub fn reload(method: &Reload, timeout: Duration) -> Result<(), String> {
    match method {
        Reload::Command(command) => run_reload_command(command, timeout),
        Reload::MasterSocket(socket) => reload_through_master(socket, Duration::from_secs(10)),
        Reload::Signal { pid_file, signal } => send_signal(pid_file, *signal),
    }
}

fn run_reload_command(command: &str, timeout: Duration) -> Result<(), String> {
    let finished = super::process::run(Command::new("sh").arg("-c").arg(command), timeout)
        .map_err(|e| format!("`{command}`: {e}"))?;
    if finished.status.success() {
        return Ok(());
    }
    // One line, so that it stays one line of the log.
    let said: Vec<&str> = finished
        .output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    Err(format!(
        "`{command}` failed ({}): {}",
        finished.status,
        said.join(" / ")
    ))
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
        crate::apply::runtime_api::command(socket, "show proc")
            .ok()
            .and_then(|answer| master_reloads(&answer))
    };
    let (reloads, failed) =
        show_proc().ok_or_else(|| format!("no HAProxy master answers on {}", socket.display()))?;
    crate::apply::runtime_api::command(socket, "reload")
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
