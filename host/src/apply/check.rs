//! Asking HAProxy itself whether a configuration is valid.

use crate::assemble::Assembled;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The check command HAProxy users know; the file to check is appended.
pub const DEFAULT_CHECK_COMMAND: &str = "haproxy -c -f";

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the check command `{command}`: {error}")]
    Run {
        command: String,
        error: crate::apply::process::RunError,
    },
    #[error("cannot write the configuration to check: {0}")]
    Stage(std::io::Error),
    #[error("the check command `{command}` is empty")]
    Empty { command: String },
    #[error("HAProxy rejected the configuration ({status}):\n{output}")]
    Rejected {
        status: std::process::ExitStatus,
        output: String,
    },
}

/// How long a check or reload command may take by default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Write `assembled` (with its maps) into a temporary directory and [`check`] it there.
pub fn check_staged(
    command: &str,
    assembled: &Assembled,
    timeout: Duration,
) -> Result<String, CheckError> {
    let staging = tempfile::tempdir().map_err(CheckError::Stage)?;
    let config = staging.path().join("haproxy.cfg");
    crate::apply::install::write(&config, assembled).map_err(CheckError::Stage)?;
    check(command, &config, assembled, timeout)
}

/// Run `command` (split on whitespace) with `config` appended, killed after `timeout`. On
/// success, returns what it printed (HAProxy's warnings). On failure, its output, with the part
/// and section that wrote each line it complains about.
pub fn check(
    command: &str,
    config: &Path,
    assembled: &Assembled,
    timeout: Duration,
) -> Result<String, CheckError> {
    let mut words = command.split_whitespace();
    let program = words.next().ok_or_else(|| CheckError::Empty {
        command: command.into(),
    })?;
    let finished =
        crate::apply::process::run(Command::new(program).args(words).arg(config), timeout)
            .map_err(|error| CheckError::Run {
                command: command.into(),
                error,
            })?;
    if finished.status.success() {
        Ok(finished.output)
    } else {
        Err(CheckError::Rejected {
            status: finished.status,
            output: explain(&finished.output, assembled),
        })
    }
}

/// After each line of HAProxy's output that cites `[file:LINE]`, say which part wrote that line.
pub fn explain(output: &str, assembled: &Assembled) -> String {
    let mut explained = String::new();
    for line in output.lines() {
        explained.push_str(line);
        explained.push('\n');
        if let Some(origin) = cited_line(line).and_then(|n| assembled.origin_of(n)) {
            explained.push_str(&format!("    -> written by {origin}\n"));
        }
    }
    explained
}

/// The line number in `parsing [file:12]` or `[file:12] :`.
fn cited_line(line: &str) -> Option<usize> {
    line.split('[').skip(1).find_map(|rest| {
        let inside = &rest[..rest.find(']')?];
        inside.rsplit_once(':')?.1.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cited_line() {
        assert_eq!(
            cited_line("[ALERT]    (1) : config : parsing [/tmp/x.cfg:12] : unknown keyword"),
            Some(12)
        );
        assert_eq!(
            cited_line("parsing [/tmp/x.cfg:12] : unknown keyword"),
            Some(12)
        );
        assert_eq!(cited_line("no brackets"), None);
    }
}
