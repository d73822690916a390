//! Putting a configuration and its map files on disk so that a failure at any step (a full
//! disk, a crash) leaves the previous configuration complete.
//!
//! Everything new is written first, into a staging directory beside the configuration, where
//! it can be checked: the staged configuration sees its new maps in `maps/`, its certificates in
//! `certs/` and everything else of the configuration's directory through links, so relative
//! paths resolve as they will. A map, certificate or record file that holds already what is to
//! be installed (as an endpoint change leaves them) is not written again: the staging directory
//! holds a hard link to it. Only then do renames, which need no space, put the maps and
//! certificates and, last, the configuration in place. Files an earlier install wrote and this
//! one does not are removed after that. Only those: wasmconfd records the files it writes
//! (`maps/.wasmconfd-files`, `certs/.wasmconfd-files`), and never touches the others, such as
//! an operator's own. Certificate files hold private keys: they are readable by their owner
//! only (`0600`).

use crate::assemble::{Assembled, CERTS_DIR, MAPS_DIR};
use crate::files::{parent_dir, with_suffix};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The record of the files wasmconfd wrote, in each directory it writes.
const RECORD: &str = ".wasmconfd-files";
/// Its name before certificates had a directory too.
const OLD_MAPS_RECORD: &str = ".wasmconfd-maps";
/// Names of staging directories and temporary files beside the configuration.
const STAGING_PREFIX: &str = ".wasmconfd-";

/// The directories beside the configuration whose files wasmconfd writes: maps (readable by
/// all), certificates (with private keys: readable by the owner only).
const DIRS: [(&str, u32); 2] = [(MAPS_DIR, 0o644), (CERTS_DIR, 0o600)];

/// A configuration, its maps and its certificates written beside `target`, not yet in place.
pub struct Staged {
    dir: tempfile::TempDir,
    target: PathBuf,
    /// The names written into each of [`DIRS`].
    files: [Vec<String>; 2],
}

impl Staged {
    /// Write `assembled` into a new staging directory beside `target`.
    pub fn new(target: &Path, assembled: &Assembled) -> std::io::Result<Staged> {
        refuse_not_a_file(target)?;
        let live = parent_dir(target);
        std::fs::create_dir_all(live)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}stage-"))
            .tempdir_in(live)?;
        let name = target.file_name().unwrap_or_default();
        for entry in std::fs::read_dir(live)? {
            let entry = entry?.file_name();
            let ours = entry == name
                || DIRS.iter().any(|(d, _)| entry == *d)
                || entry.to_string_lossy().starts_with(STAGING_PREFIX);
            if !ours {
                std::os::unix::fs::symlink(Path::new("..").join(&entry), dir.path().join(&entry))?;
            }
        }
        let mut files: [Vec<String>; 2] = Default::default();
        for (((subdir, mode), contents), names) in DIRS
            .iter()
            .zip([&assembled.maps, &assembled.certs])
            .zip(&mut files)
        {
            let (staged, live) = (dir.path().join(subdir), live.join(subdir));
            std::fs::create_dir(&staged)?;
            link_others(&live, &staged, contents)?;
            let mut record = String::new();
            for (name, text) in contents {
                stage(&staged, &live, name, text.as_bytes(), *mode)?;
                record.push_str(name);
                record.push('\n');
                names.push(name.clone());
            }
            stage(&staged, &live, RECORD, record.as_bytes(), 0o644)?;
        }
        // Written anew even when unchanged (a map-only change): linked, it would end up one file
        // with `<target>.prev`, and an edit of either in place would change both.
        let (config, mode) = (assembled.config.as_bytes(), mode_of(target, 0o644));
        write_new(&dir.path().join(name), config, mode)?;
        Ok(Staged {
            target: target.to_path_buf(),
            files,
            dir,
        })
    }

    /// The staged configuration, to check.
    pub fn config(&self) -> PathBuf {
        self.dir
            .path()
            .join(self.target.file_name().unwrap_or_default())
    }

    /// Put the staged files in place: the maps and certificates, then the configuration
    /// (keeping the one it replaces as `<target>.prev`), then the records; then remove the files
    /// the previous records list that this install does not have.
    pub fn commit(self) -> std::io::Result<()> {
        let live = parent_dir(&self.target);
        let before: Vec<_> = DIRS.iter().map(|(d, _)| recorded(&live.join(d))).collect();
        if self.target.exists() {
            keep_previous(&self.target)?;
        }
        for ((subdir, _), names) in DIRS.iter().zip(&self.files) {
            let (staged, live) = (self.dir.path().join(subdir), live.join(subdir));
            std::fs::create_dir_all(&live)?;
            for name in names {
                std::fs::rename(staged.join(name), live.join(name))?;
            }
        }
        std::fs::rename(self.config(), &self.target)?;
        for (((subdir, _), names), before) in DIRS.iter().zip(&self.files).zip(before) {
            let (staged, live) = (self.dir.path().join(subdir), live.join(subdir));
            std::fs::rename(staged.join(RECORD), live.join(RECORD))?;
            let _ = std::fs::remove_file(live.join(OLD_MAPS_RECORD));
            sync_dir(&live)?;
            for stale in before.iter().filter(|name| !names.contains(name)) {
                match std::fs::remove_file(live.join(stale)) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(%error, file = %stale, "cannot remove a file no longer written")
                    }
                    _ => {}
                }
            }
        }
        sync_dir(live)
    }
}

/// Link into `staged` the files of `live` that wasmconfd does not write (an operator's own
/// certificate or map, which a static part may reference), so the staged configuration sees
/// them where they are. One that wasmconfd is about to write is refused: it never replaces a
/// file it did not write.
fn link_others(live: &Path, staged: &Path, ours: &[(String, String)]) -> std::io::Result<()> {
    // `staged` is `<dir>/.wasmconfd-stage-*/<subdir>`, `live` is `<dir>/<subdir>`.
    let from_staged = Path::new("../..").join(live.file_name().unwrap_or_default());
    let Ok(entries) = std::fs::read_dir(live) else {
        return Ok(());
    };
    let recorded = recorded(live);
    for entry in entries {
        let name = entry?.file_name();
        let text = name.to_string_lossy();
        let records = text == RECORD || text == OLD_MAPS_RECORD;
        if records || recorded.iter().any(|r| *r == text) {
            continue;
        }
        if ours.iter().any(|(n, _)| *n == text) {
            return Err(std::io::Error::other(format!(
                "{} is not a file wasmconfd wrote, and it would replace it: move it away",
                live.join(&name).display()
            )));
        }
        std::os::unix::fs::symlink(from_staged.join(&name), staged.join(&name))?;
    }
    Ok(())
}

/// Put file `name` with `bytes` and permissions `mode` into directory `staged`: a hard link to
/// the one in `live` when that already is so (an unchanged map or certificate: nothing to write
/// and sync; renaming it into place later leaves it as it is), or else a new file. Only a plain
/// file is linked: a symbolic link put there is replaced by a file, as any changed file is.
fn stage(staged: &Path, live: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let (staged, live) = (staged.join(name), live.join(name));
    let alike = std::fs::symlink_metadata(&live)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o7777 == mode);
    let unchanged = alike && file_holds(&live, bytes);
    if unchanged && std::fs::hard_link(&live, &staged).is_ok() {
        return Ok(());
    }
    write_new(&staged, bytes, mode)
}

/// Write `bytes` to a new file at `path`, on disk, with permissions `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

/// The permissions of the file `path`, or `default` (`0644`: readable by HAProxy after a
/// privilege drop).
fn mode_of(path: &Path, default: u32) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or(default, |meta| meta.permissions().mode() & 0o7777)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Refuse a `target` that is not a file's path: a symbolic link (the configuration is replaced
/// by renaming, which would replace the link with a file and leave what it points to as it
/// was), or a directory.
pub fn refuse_not_a_file(target: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let points_to = std::fs::read_link(target).unwrap_or_default();
            Err(std::io::Error::other(format!(
                "{} is a symbolic link (to {}): wasmconfd replaces the configuration by renaming \
                 a new file over it, which would replace the link; name the file itself",
                target.display(),
                points_to.display()
            )))
        }
        Ok(meta) if meta.is_dir() => Err(std::io::Error::other(format!(
            "{} is a directory: name the configuration file itself, such as {}",
            target.display(),
            target.join("haproxy.cfg").display()
        ))),
        _ => Ok(()),
    }
}

/// Whether the file at `path` holds `bytes`. Read a part at a time, and not at all when its
/// length differs: a changed configuration is told from the one on disk without reading it all.
pub fn file_holds(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Read as _;
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if file.metadata().map(|m| m.len()).ok() != u64::try_from(bytes.len()).ok() {
        return false;
    }
    let mut part = vec![0; 64 << 10];
    let mut rest = bytes;
    loop {
        match file.read(&mut part) {
            Ok(0) => return rest.is_empty(),
            Ok(n) if rest.starts_with(&part[..n]) => rest = &rest[n..],
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}

/// The files the last install recorded writing into directory `dir`.
fn recorded(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(RECORD))
        .or_else(|_| std::fs::read_to_string(dir.join(OLD_MAPS_RECORD)))
        .unwrap_or_default()
        .lines()
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The files the last install beside `target` wrote into its directory `dir` (`maps` or
/// `certs`), with their contents, sorted by name.
pub fn installed(target: &Path, dir: &str) -> Vec<(String, String)> {
    let dir = parent_dir(target).join(dir);
    let mut installed: Vec<_> = recorded(&dir)
        .into_iter()
        .filter_map(|name| Some((name.clone(), std::fs::read_to_string(dir.join(&name)).ok()?)))
        .collect();
    installed.sort();
    installed
}

/// Write `assembled` to `target` and its maps beside it, as [`Staged`] does, without a check.
pub fn write(target: &Path, assembled: &Assembled) -> std::io::Result<()> {
    Staged::new(target, assembled)?.commit()
}

/// `target` -> `target.prev`, without a moment where `target` is missing: a hard link, renamed.
fn keep_previous(target: &Path) -> std::io::Result<()> {
    let link = tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}prev-"))
        .make_in(parent_dir(target), |path| std::fs::hard_link(target, path))?;
    link.persist(with_suffix(target, ".prev"))
        .map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{Output, assemble};
    use crate::bindings::{MapEntry, MapFile};
    use crate::fragment::Fragment;
    use crate::guests::{Part, Source};

    /// A configuration `text` with map files `maps` (name, one key).
    fn assembled(text: &str, maps: &[&str]) -> Assembled {
        let part = Part {
            slot: "10-test".into(),
            origin: "test".into(),
            source: Source::Static(text.into()),
        };
        let maps = maps.iter().map(|name| MapFile {
            name: name.to_string(),
            entries: vec![MapEntry {
                key: "k".into(),
                value: text.trim().into(),
            }],
        });
        let fragment = Fragment::new([], maps);
        assemble(&[
            (&part, Output::Static(text)),
            (&part, Output::Fragment(&fragment)),
        ])
        .unwrap()
    }

    #[test]
    fn files_that_did_not_change_stay_as_they_are_and_the_others_are_replaced() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("haproxy.cfg");
        let map = |name: &str| dir.path().join("maps").join(name);
        let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
        let with_maps = |text: &str, changed: &str| {
            let mut assembled = assembled(text, &[]);
            assembled.maps = vec![
                ("changed.map".into(), changed.into()),
                ("kept.map".into(), "a b\n".into()),
            ];
            assembled
        };
        write(&target, &with_maps("one", "c d\n")).unwrap();
        let (kept, changed, config) = (
            inode(&map("kept.map")),
            inode(&map("changed.map")),
            inode(&target),
        );

        let second = with_maps("two", "c e\n");
        write(&target, &second).unwrap();
        assert_eq!(inode(&map("kept.map")), kept, "not written again");
        assert_ne!(inode(&map("changed.map")), changed);
        assert_ne!(inode(&target), config);
        assert_eq!(
            std::fs::read_to_string(map("changed.map")).unwrap(),
            "c e\n"
        );
        assert_eq!(std::fs::read_to_string(map("kept.map")).unwrap(), "a b\n");
        assert!(std::fs::read_to_string(&target).unwrap().contains("two"));

        // A file changed behind wasmconfd's back is written again.
        std::fs::write(map("kept.map"), "edited\n").unwrap();
        write(&target, &second).unwrap();
        assert_eq!(std::fs::read_to_string(map("kept.map")).unwrap(), "a b\n");

        // A map replaced by a symbolic link to the same contents becomes a file again.
        std::fs::rename(map("kept.map"), dir.path().join("elsewhere.map")).unwrap();
        std::os::unix::fs::symlink("../elsewhere.map", map("kept.map")).unwrap();
        write(&target, &second).unwrap();
        let meta = std::fs::symlink_metadata(map("kept.map")).unwrap();
        assert!(meta.file_type().is_file(), "{meta:?}");
        assert_eq!(std::fs::read_to_string(map("kept.map")).unwrap(), "a b\n");

        // Installed again and again unchanged: nothing of wasmconfd's own is left about.
        write(&target, &second).unwrap();
        write(&target, &second).unwrap();
        let prev = std::fs::read_to_string(with_suffix(&target, ".prev")).unwrap();
        assert!(prev.contains("two"), "{prev}");
        let left = std::fs::read_dir(dir.path()).unwrap().flatten();
        let temporary =
            left.filter(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX));
        assert_eq!(
            temporary.map(|e| e.file_name()).collect::<Vec<_>>(),
            Vec::<std::ffi::OsString>::new(),
            "no staging directory or temporary link is left"
        );
    }

    #[test]
    fn a_file_holds_exactly_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &long).unwrap();
        assert!(file_holds(&path, &long));
        let mut last_differs = long.clone();
        *last_differs.last_mut().unwrap() ^= 1;
        assert!(
            !file_holds(&path, &last_differs),
            "a difference in the last part"
        );
        assert!(!file_holds(&path, &long[..long.len() - 1]), "shorter");
        assert!(!file_holds(&dir.path().join("missing"), b""));
        std::fs::write(&path, b"").unwrap();
        assert!(file_holds(&path, b""));
    }

    #[test]
    fn only_maps_wasmconfd_wrote_are_removed_and_staging_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("haproxy.cfg");
        write(&target, &assembled("one", &["a.map", "b.map"])).unwrap();
        std::fs::write(dir.path().join("maps/operator.map"), "mine\n").unwrap();
        std::fs::write(dir.path().join("errors.http"), "x").unwrap();
        let two = assembled("two", &["a.map"]);
        let staged = Staged::new(&target, &two).unwrap();
        // The staged configuration sees the directory's other files where they will be.
        assert!(staged.config().with_file_name("errors.http").exists());
        assert!(
            staged
                .config()
                .with_file_name("maps")
                .join("operator.map")
                .exists(),
            "and the operator's own files beside wasmconfd's"
        );
        assert_eq!(
            std::fs::read_to_string(staged.config().with_file_name("maps").join("a.map")).unwrap(),
            "k two\n"
        );
        staged.commit().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("maps"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, [".wasmconfd-files", "a.map", "operator.map"]);
        assert_eq!(installed(&target, MAPS_DIR), two.maps);
        assert!(target.with_extension("cfg.prev").exists());
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".wasmconfd")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn an_operators_own_certificate_is_seen_by_the_check_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("haproxy.cfg");
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/mine.pem"), "operator's").unwrap();
        let mut with_certs = assembled("one", &[]);
        with_certs.certs = vec![("default.pem".into(), "ours".into())];
        let staged = Staged::new(&target, &with_certs).unwrap();
        let certs = staged.config().with_file_name("certs");
        assert_eq!(
            std::fs::read_to_string(certs.join("mine.pem")).unwrap(),
            "operator's"
        );
        staged.commit().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("certs/default.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(dir.path().join("certs/other.pem"), "operator's").unwrap();
        with_certs.certs.push(("other.pem".into(), "ours".into()));
        let error = Staged::new(&target, &with_certs).err().unwrap().to_string();
        assert!(
            error.contains("other.pem is not a file wasmconfd wrote"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("certs/other.pem")).unwrap(),
            "operator's"
        );
    }

    #[test]
    fn a_symlinked_target_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.cfg");
        std::fs::write(&real, "old").unwrap();
        let link = dir.path().join("haproxy.cfg");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let error = write(&link, &assembled("new", &[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is a symbolic link") && error.contains("real.cfg"),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "old");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_directory_as_target_is_refused_with_what_to_name() {
        let dir = tempfile::tempdir().unwrap();
        let error = write(dir.path(), &assembled("new", &[]))
            .unwrap_err()
            .to_string();
        let file = dir.path().join("haproxy.cfg");
        assert!(
            error.contains("is a directory") && error.contains(&*file.to_string_lossy()),
            "{error}"
        );
        assert!(!file.exists(), "nothing written");
    }
}
