//! Installing and reloading with the real HAProxy in master-worker mode: what a client sees
//! through HAProxy follows each applied configuration, an unchanged one reloads nothing, and a
//! rejected one leaves HAProxy serving the last good configuration.

mod common;

use common::free_port;
use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmconfd::apply::plan::Op;
use wasmconfd::apply::runtime_api::{self, RuntimeError, command};
use wasmconfd::apply::{Applied, Applier, ApplyError, Prepared, Reload, Signal};
use wasmconfd::assemble::{self, Assembled, Output};
use wasmconfd::bindings::{MapEntry, MapFile};
use wasmconfd::fragment::Fragment;
use wasmconfd::guests::{Part, Source};

/// A configuration answering every request with `word`, with a map file holding `word`.
fn config(port: u16, word: &str) -> Assembled {
    config_with_global(port, word, "")
}

/// [`config`] with more `global` lines.
fn config_with_global(port: u16, word: &str, global: &str) -> Assembled {
    let text = format!(
        "global\n    default-path config\n{global}defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    \
         timeout server 5s\nfrontend f\n    bind 127.0.0.1:{port}\n    \
         http-request return status 200 content-type text/plain lf-string %[str(word),map(maps/words.map)]\n"
    );
    assembled(&text, &[("words.map", "word", word)])
}

/// The static configuration `text`, with map files (name, one key, its value) from a guest.
fn assembled(text: &str, maps: &[(&str, &str, &str)]) -> Assembled {
    let part = Part {
        slot: "10-test".into(),
        origin: "test".into(),
        source: Source::Static(text.into()),
    };
    let maps = maps.iter().map(|(name, key, value)| MapFile {
        name: name.to_string(),
        entries: vec![MapEntry {
            key: key.to_string(),
            value: value.to_string(),
        }],
    });
    let maps = Fragment::new([], maps);
    let maps_part = Part {
        slot: "20-maps".into(),
        ..part.clone()
    };
    assemble::assemble(&[
        (&part, Output::Static(text)),
        (&maps_part, Output::Fragment(&maps)),
    ])
    .unwrap()
}

fn get(port: u16) -> String {
    common::http_get(port, "x").1
}

/// `haproxy -W -S socket` on `config`, with a pid file.
struct Master {
    _haproxy: common::Killed,
    socket: PathBuf,
    pid_file: PathBuf,
}

impl Master {
    fn start(dir: &Path, config: &Path, port: u16) -> Self {
        let (socket, pid_file) = (dir.join("master.sock"), dir.join("haproxy.pid"));
        let args = [
            OsStr::new("-W"),
            OsStr::new("-S"),
            socket.as_os_str(),
            OsStr::new("-p"),
            pid_file.as_os_str(),
        ];
        let haproxy = common::start_haproxy(
            &[&args[..], &[OsStr::new("-f"), config.as_os_str()]].concat(),
            &dir.join("haproxy.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || command(&socket, "show proc").is_err()
        {
            assert!(Instant::now() < deadline, "HAProxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Master {
            _haproxy: haproxy,
            socket,
            pid_file,
        }
    }

    /// (reloads, failed reloads, worker pids) from `show proc`.
    fn state(&self) -> (u64, u64, Vec<String>) {
        common::show_proc(&self.socket)
    }
}

/// Apply `assembled` as the daemon does when only servers or map entries changed: staged and
/// checked, then changed by `runtime` unless a reload is owed, then installed (and reloaded
/// unless `runtime` made the change).
fn at_runtime(
    applier: &Applier,
    assembled: &Assembled,
    runtime: impl Fn() -> Result<(), RuntimeError>,
) -> Applied {
    let Prepared::Staged(staged) = applier.prepare(assembled).unwrap() else {
        panic!("the configuration is new, so it is staged");
    };
    let changed = !applier.reload_pending() && runtime().is_ok();
    applier.install(staged, changed).unwrap()
}

/// Wait until HAProxy answers `word` (a reload takes a moment to take over the socket).
fn wait_for(port: u16, word: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(port) != word {
        assert!(
            Instant::now() < deadline,
            "HAProxy still answers {:?}, not {word:?}",
            get(port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn master_socket_reloads_follow_each_change_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("haproxy.cfg");
    let port = free_port();
    wasmconfd::apply::install::write(&target, &config(port, "one")).unwrap();
    let master = Master::start(dir.path(), &target, port);
    assert_eq!(get(port), "one");

    let applier = Applier {
        target: target.clone(),
        check_command: "haproxy -c -f".into(),
        command_timeout: wasmconfd::apply::check::DEFAULT_COMMAND_TIMEOUT,
        reload: Reload::MasterSocket(master.socket.clone()),
    };
    assert_eq!(
        applier.apply(&config(port, "one")).unwrap(),
        Applied::Unchanged
    );
    assert_eq!(
        master.state().0,
        0,
        "an unchanged configuration must not reload"
    );

    assert_eq!(
        applier.apply(&config(port, "two")).unwrap(),
        Applied::Reloaded
    );
    wait_for(port, "two");
    assert_eq!(master.state().0, 1);
    let previous = std::fs::read_to_string(dir.path().join("haproxy.cfg.prev")).unwrap();
    assert_eq!(
        previous,
        config(port, "one").config,
        "the previous configuration is kept"
    );

    // A configuration HAProxy rejects: not installed, maps put back, HAProxy keeps serving.
    let mut broken = config(port, "three");
    broken.config.push_str("    no-such-keyword\n");
    let error = applier.apply(&broken).unwrap_err();
    assert!(matches!(error, ApplyError::Check(_)), "{error}");
    assert!(error.to_string().contains("no-such-keyword"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        config(port, "two").config
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("maps/words.map")).unwrap(),
        "word two\n"
    );
    assert_eq!(get(port), "two");
    assert_eq!(
        master.state().0,
        1,
        "a rejected configuration must not reload"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".wasmconfd"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn a_runtime_change_is_made_without_a_reload_and_a_failed_one_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("haproxy.cfg");
    let admin = dir.path().join("admin.sock");
    let port = free_port();
    let config = |word| {
        let socket = format!("    stats socket {} level admin\n", admin.display());
        config_with_global(port, word, &socket)
    };
    wasmconfd::apply::install::write(&target, &config("one")).unwrap();
    let master = Master::start(dir.path(), &target, port);
    let (_, _, workers) = master.state();
    let applier = Applier {
        target: target.clone(),
        check_command: "haproxy -c -f".into(),
        command_timeout: wasmconfd::apply::check::DEFAULT_COMMAND_TIMEOUT,
        reload: Reload::MasterSocket(master.socket.clone()),
    };

    // The map entry changes in the running HAProxy, and on disk for the next reload.
    let set_map = || {
        let op = Op::SetMap {
            file: "maps/words.map".into(),
            key: "word".into(),
            value: "two".into(),
        };
        runtime_api::apply(&admin, &[op]).map(|_| ())
    };
    assert_eq!(
        at_runtime(&applier, &config("two"), set_map),
        Applied::Runtime
    );
    assert_eq!(get(port), "two");
    assert_eq!(master.state(), (0, 0, workers.clone()), "no reload");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("maps/words.map")).unwrap(),
        "word two\n"
    );
    assert!(!applier.pending_marker().exists());

    // The Runtime API fails: the change is made by a reload.
    let fails = || Err(RuntimeError::Mismatch("as the test says".into()));
    assert_eq!(
        at_runtime(&applier, &config("three"), fails),
        Applied::Reloaded
    );
    wait_for(port, "three");
    assert_eq!(master.state().0, 1);

    // With a reload pending, HAProxy may not run the files on disk: reload, do not patch.
    std::fs::write(applier.pending_marker(), "").unwrap();
    let untouched = || panic!("the Runtime API must not be used while a reload is pending");
    assert_eq!(
        at_runtime(&applier, &config("four"), untouched),
        Applied::Reloaded
    );
    wait_for(port, "four");
}

#[test]
fn signal_and_command_reloads_and_a_failed_reload_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("haproxy.cfg");
    let port = free_port();
    wasmconfd::apply::install::write(&target, &config(port, "one")).unwrap();
    let master = Master::start(dir.path(), &target, port);
    let workers = master.state().2;

    let mut applier = Applier {
        target: target.clone(),
        check_command: "haproxy -c -f".into(),
        command_timeout: wasmconfd::apply::check::DEFAULT_COMMAND_TIMEOUT,
        reload: Reload::Signal {
            pid_file: master.pid_file.clone(),
            signal: Signal::Usr2,
        },
    };
    applier.apply(&config(port, "two")).unwrap();
    wait_for(port, "two");
    assert_ne!(
        master.state().2,
        workers,
        "USR2 to the master replaces the worker"
    );

    applier.reload = Reload::Command(format!("kill -USR2 $(cat {})", master.pid_file.display()));
    applier.apply(&config(port, "three")).unwrap();
    wait_for(port, "three");

    applier.reload = Reload::Command("echo the service manager is down >&2; exit 3".into());
    let error = applier
        .apply(&config(port, "four"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("reload failed: `echo") && error.contains("the service manager is down"),
        "{error}"
    );
    assert_eq!(
        get(port),
        "three",
        "HAProxy keeps serving when a reload fails"
    );
    assert!(
        std::fs::read_to_string(&target).unwrap().contains("bind"),
        "the new file is in place for a retry"
    );

    // A new applier (a restarted wasmconfd) with the same configuration still owes the reload.
    let restarted = Applier {
        reload: Reload::Command(format!("kill -USR2 $(cat {})", master.pid_file.display())),
        ..applier
    };
    assert_eq!(
        restarted.apply(&config(port, "four")).unwrap(),
        Applied::Reloaded
    );
    wait_for(port, "four");
    assert_eq!(
        restarted.apply(&config(port, "four")).unwrap(),
        Applied::Unchanged
    );
}

#[test]
fn a_missing_target_is_a_first_install() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("conf/haproxy.cfg");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let applier = Applier {
        target: target.clone(),
        check_command: "haproxy -c -f".into(),
        command_timeout: wasmconfd::apply::check::DEFAULT_COMMAND_TIMEOUT,
        reload: Reload::Command("true".into()),
    };
    assert_eq!(
        applier.apply(&config(free_port(), "one")).unwrap(),
        Applied::Reloaded
    );
    assert!(target.exists() && !dir.path().join("conf/haproxy.cfg.prev").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("conf/maps/words.map")).unwrap(),
        "word one\n"
    );
}

/// [`config`] that also denies the paths in `maps/deny.map`, which it writes: HAProxy refuses
/// to start without that file.
fn config_with_deny_map(port: u16, word: &str) -> Assembled {
    let text = format!(
        "global\n    default-path config\ndefaults\n    mode http\n    timeout connect 1s\n    \
         timeout client 5s\n    timeout server 5s\nfrontend f\n    bind 127.0.0.1:{port}\n    \
         http-request deny if {{ path -m beg -f maps/deny.map }}\n    \
         http-request return status 200 content-type text/plain lf-string %[str(word),map(maps/words.map)]\n"
    );
    assembled(
        &text,
        &[("words.map", "word", word), ("deny.map", "/admin", "x")],
    )
}

/// A tmpfs of its own, to fill up; unmounted when dropped. Mounting needs root, or `sudo`
/// without a password as `scripts/setup.sh` uses it: a test that cannot mount fails, it does
/// not skip.
struct SmallDisk {
    dir: tempfile::TempDir,
}

/// `program` run as root: directly when we are root, else through `sudo -n`.
fn as_root(program: &str) -> std::process::Command {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if root {
        std::process::Command::new(program)
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

impl SmallDisk {
    fn mount(kib: usize) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = as_root("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=1777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root or sudo)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the disk, then free `pages` pages of 4 KiB again.
    fn fill_leaving(&self, pages: u64) {
        use std::io::Write as _;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        let mut written = 0u64;
        while file.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        drop(file);
        let keep = written.saturating_sub(pages * 4096);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(keep)
            .unwrap();
    }

    fn empty(&self) {
        let _ = std::fs::remove_file(self.path().join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = as_root("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The disk fills up at each step of an install in turn (a map, the record, the
/// configuration...): each time, what was installed before is complete (its maps, even one the
/// new configuration drops, are there), passes `haproxy -c` and serves; an operator's own map
/// file survives every install; and once there is room the new configuration goes in whole.
#[test]
fn a_full_disk_at_any_step_of_an_install_leaves_the_previous_configuration_complete() {
    let disk = SmallDisk::mount(256);
    let conf = disk.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let target = conf.join("haproxy.cfg");
    let applier = Applier {
        target: target.clone(),
        check_command: "haproxy -c -f".into(),
        command_timeout: wasmconfd::apply::check::DEFAULT_COMMAND_TIMEOUT,
        reload: Reload::Command("true".into()),
    };
    let port = free_port();
    let before = config_with_deny_map(port, "before");
    let after = config(port, "after");
    applier.apply(&before).unwrap();
    let operator = conf.join("maps/operator-acl.map");
    std::fs::write(&operator, "10.0.0.0/8 allowed\n").unwrap();
    let read = |name: &str| std::fs::read_to_string(conf.join(name)).ok();

    let (mut failed, mut succeeded) = (0, 0);
    for pages in 0..8 {
        disk.fill_leaving(pages);
        let result = applier.apply(&after);
        disk.empty();
        assert!(
            read("maps/operator-acl.map").is_some(),
            "the operator's map was removed"
        );
        let (valid, output) = common::haproxy_check(&target);
        assert!(
            valid,
            "{pages} pages free: the installed configuration is broken:\n{output}"
        );
        match result {
            Err(error) => {
                failed += 1;
                assert!(matches!(error, ApplyError::Write { .. }), "{error}");
                assert_eq!(read("haproxy.cfg").as_deref(), Some(before.config.as_str()));
                assert!(
                    read("maps/deny.map").is_some(),
                    "{pages} pages: a map it uses is gone"
                );
            }
            Ok(_) => {
                succeeded += 1;
                assert_eq!(read("haproxy.cfg").as_deref(), Some(after.config.as_str()));
                assert_eq!(read("maps/deny.map"), None, "a map no longer written stays");
                assert_eq!(read("maps/words.map").as_deref(), Some("word after\n"));
                applier.apply(&before).unwrap();
            }
        }
        let leftovers: Vec<_> = std::fs::read_dir(&conf)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".wasmconfd-stage"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    }
    assert!(
        failed >= 2 && succeeded >= 1,
        "{failed} failed, {succeeded} succeeded"
    );

    // What is installed after a failure serves.
    disk.fill_leaving(0);
    assert!(applier.apply(&after).is_err());
    disk.empty();
    let master = Master::start(disk.path(), &target, port);
    assert_eq!(get(port), "before");
    drop(master);
    assert!(operator.exists());
}

/// A check command or a reload command that hangs is killed after its time and fails: the
/// live configuration stays, nothing staged is left behind, and the call returns.
#[test]
fn a_hanging_check_or_reload_command_times_out() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nsleep 30 &\nsleep 30\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.path().join("haproxy.cfg");
    let port = free_port();
    let applier = Applier {
        target: target.clone(),
        check_command: "haproxy -c -f".into(),
        command_timeout: Duration::from_millis(500),
        reload: Reload::Command("true".into()),
    };
    applier.apply(&config(port, "one")).unwrap();

    let hanging_check = Applier {
        check_command: hang.display().to_string(),
        ..applier.clone()
    };
    let started = Instant::now();
    let error = hanging_check.apply(&config(port, "two")).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        error.to_string().contains("did not finish within 500ms"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        config(port, "one").config
    );
    let staged = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".wasmconfd")
        })
        .count();
    assert_eq!(staged, 0, "a staging directory was left behind");

    let hanging_reload = Applier {
        reload: Reload::Command(hang.display().to_string()),
        ..applier
    };
    let started = Instant::now();
    let error = hanging_reload.apply(&config(port, "three")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(error, ApplyError::Reload(_)) && error.to_string().contains("did not finish"),
        "{error}"
    );
}
