//! Running the operator's commands (the check, the reload) with a time limit, so a command that
//! hangs cannot hang wasmconfd.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a command printed, and how it ended.
pub struct Finished {
    pub status: ExitStatus,
    /// Its standard output, then its standard error.
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    #[error("it did not finish within {}, so it was killed", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

/// Run `command` in a process group of its own, with no input, and kill the whole group if it
/// has not finished within `timeout`.
pub fn run(command: &mut Command, timeout: Duration) -> Result<Finished, RunError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(RunError::Spawn)?;
    let deadline = Instant::now() + timeout;
    // Read both pipes on threads of their own, so a chatty command never blocks on a full pipe.
    let (sender, received) = mpsc::channel();
    let pipes: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("piped")),
        Box::new(child.stderr.take().expect("piped")),
    ];
    for (i, mut pipe) in pipes.into_iter().enumerate() {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send((i, bytes));
        });
    }
    let status = loop {
        if let Some(status) = child.try_wait().map_err(RunError::Spawn)? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            return Err(RunError::TimedOut(timeout));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A process it left behind may hold the pipes open: wait for them only until the deadline.
    let mut output = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left.max(Duration::from_millis(100))) {
            Ok((i, bytes)) => output[i] = bytes,
            Err(_) => break,
        }
    }
    Ok(Finished {
        status,
        output: String::from_utf8_lossy(&output[0]).into_owned()
            + &String::from_utf8_lossy(&output[1]),
    })
}

fn kill_group(pid: u32) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_come_back_and_a_hanging_command_is_killed_with_its_children() {
        let done = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            (done.status.code(), done.output.as_str()),
            (Some(3), "out\nerr\n")
        );

        let started = Instant::now();
        let error = run(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .err()
        .unwrap();
        assert!(matches!(error, RunError::TimedOut(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            error.to_string().contains("did not finish within 300ms"),
            "{error}"
        );
    }
}
