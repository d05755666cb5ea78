//! File-system helpers: atomic writes with modes, private directories and
//! advisory locks.
//!
//! Invariant: a file written here is either the old content or the new
//! content, never a mix: bytes go to a fresh temporary file in the same
//! directory (created with its final mode, so a key is never briefly world
//! readable), which is fsynced and renamed over the target; the directory is
//! then fsynced so the rename survives a crash. Callers add the path to errors.
//!
//! Modes are exact whatever the umask: `open(2)` and `mkdir(2)` mask the
//! mode they are given, so every file and directory created here is
//! `fchmod`ed/`chmod`ed to its documented mode right after creation (a lock
//! file created 0640 under umask 027 would lock the API's service user out
//! for good).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Writes `bytes` to `path` atomically with permission bits `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    install(&tmp, path)
}

/// Writes a private key atomically: 0600, or, with `readers`, 0640 and that
/// group (a service's group that must read it). The group is set on the
/// temporary file, so the key is never in place with other modes.
pub fn write_key(path: &Path, bytes: &[u8], readers: Option<u32>) -> io::Result<()> {
    let tmp = write_temp(path, bytes, if readers.is_some() { 0o640 } else { 0o600 })?;
    if let Some(gid) = readers {
        if let Err(e) = rustix::fs::chown(&tmp, None, Some(rustix::process::Gid::from_raw(gid))) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
    }
    install(&tmp, path)
}

/// Renames a written temporary file over `path` and syncs the directory.
fn install(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })?;
    sync_parent(path);
    Ok(())
}

/// Writes `bytes` to `path` in place with permission bits `mode`, with no
/// temporary file and no fsync: for marks that only have to outlive the
/// process, not the machine, and whose readers take a torn file as absent.
pub fn write_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)
}

/// Like [`write_atomic`] but fails with `AlreadyExists` instead of replacing
/// an existing file (used for keys that must never be overwritten silently).
pub fn write_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_parent(path);
    Ok(())
}

fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut nonce = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| io::Error::other("no randomness"))?;
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_file_name(format!(".{}.{suffix}.tmp", name.to_string_lossy()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask narrowed `mode` at open; fchmod before any byte is written.
    let written = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|_| file.write_all(bytes))
        .and_then(|_| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Creates `dir` and its missing parents; each directory created here gets
/// exactly `mode` (existing ones are left as they are).
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        // Created meanwhile by another process: theirs to set.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a check of another user's access asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a file.
    Read,
    /// Create and replace files in a directory.
    WriteDir,
}

/// Whether the user `uid` in groups `groups` has `access` to `path` by its
/// owner, group and mode bits, including search permission on every
/// directory above it. Root always has. A missing path fails.
pub fn permitted(path: &Path, uid: u32, groups: &[u32], access: Access) -> bool {
    if uid == 0 {
        return true;
    }
    let allows = |meta: &fs::Metadata, bits: u32| {
        let mode = meta.mode();
        let class = if meta.uid() == uid {
            mode >> 6
        } else if groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    };
    let Ok(abs) = std::path::absolute(path) else {
        return false;
    };
    let searchable = abs
        .ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|m| allows(&m, 0o1)));
    let wanted = match access {
        Access::Read => 0o4,
        Access::WriteDir => 0o3,
    };
    searchable && fs::metadata(&abs).is_ok_and(|m| allows(&m, wanted))
}

/// An exclusive advisory lock (`flock`), released when dropped or when the
/// holding process dies, so a crashed holder never leaves a lock behind.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// The locked file, for recording who holds it.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Takes the lock at `path` without waiting; `Ok(None)` when someone holds it.
/// The lock file is created with `mode` and never followed through a symlink.
pub fn try_lock(path: &Path, mode: u32) -> io::Result<Option<FileLock>> {
    let file = open_lock_file(path, mode)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(FileLock { file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Takes the lock at `path`, waiting for the holder (for short critical
/// sections such as registry updates).
pub fn lock(path: &Path, mode: u32) -> io::Result<FileLock> {
    let file = open_lock_file(path, mode)?;
    flock(&file, FlockOperation::LockExclusive)?;
    Ok(FileLock { file })
}

/// Whether another holder has the lock at `path` (missing file: not held).
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    else {
        return false;
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(_) => true,
    }
}

/// Opens (creating if needed) a lock file and gives it exactly `mode` when
/// this process owns it: a file it just created (the umask narrowed the
/// mode) or one an earlier run left with a narrower mode. A file owned by
/// someone else is used as it is (only its owner may chmod it).
fn open_lock_file(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.mode() & 0o7777 != mode && meta.uid() == rustix::process::geteuid().as_raw() {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        crate::testutil::scratch_dir(&format!("fsx-{name}"))
    }

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = scratch("atomic");
        let p = dir.join("key");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp files left");
    }

    #[test]
    fn write_new_refuses_existing() {
        let dir = scratch("new");
        let p = dir.join("ca.key");
        write_new_atomic(&p, b"a", 0o600).unwrap();
        let e = write_new_atomic(&p, b"b", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"a");
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Runs `f` with the process umask set to `mask`, restoring it after.
    /// Only this test module's tests touch the umask, and each test uses
    /// its own scratch directory, so a parallel test sees at worst a
    /// narrower mask on a file it then chmods itself.
    fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
        let out = f();
        rustix::process::umask(old);
        out
    }

    #[test]
    fn modes_are_exact_under_a_restrictive_umask() {
        let dir = scratch("umask");
        let (deep, lock, file) = (dir.join("a/b/c"), dir.join("x.lock"), dir.join("rec"));
        with_umask(0o077, || {
            ensure_dir(&deep, 0o770).unwrap();
            drop(try_lock(&lock, 0o660).unwrap().expect("lock"));
            write_atomic(&file, b"x", 0o644).unwrap();
        });
        for d in [dir.join("a"), dir.join("a/b"), deep] {
            assert_eq!(mode_of(&d), 0o770, "{}", d.display());
        }
        assert_eq!(mode_of(&lock), 0o660);
        assert_eq!(mode_of(&file), 0o644);
        // A lock file an older build left narrower is widened by its owner.
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o640)).unwrap();
        drop(super::lock(&lock, 0o660).unwrap());
        assert_eq!(mode_of(&lock), 0o660);
    }

    #[test]
    fn lock_excludes_second_holder_until_dropped() {
        let dir = scratch("lock");
        let p = dir.join("h--s.lock");
        let held = try_lock(&p, 0o660).unwrap().expect("first lock");
        assert!(try_lock(&p, 0o660).unwrap().is_none());
        assert!(is_locked(&p));
        drop(held);
        assert!(!is_locked(&p));
        assert!(try_lock(&p, 0o660).unwrap().is_some());
    }

    #[test]
    fn another_users_access_follows_owner_group_and_mode() {
        let dir = scratch("permitted");
        let key = dir.join("agent.key");
        write_atomic(&key, b"k", 0o640).unwrap();
        let gid = fs::metadata(&key).unwrap().gid();
        let stranger = 54321;
        assert!(permitted(&key, stranger, &[gid], Access::Read));
        assert!(!permitted(&key, stranger, &[], Access::Read));
        assert!(!permitted(&key, stranger, &[gid], Access::WriteDir));
        assert!(permitted(&key, 0, &[], Access::Read), "root reads anything");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            !permitted(&key, stranger, &[gid], Access::Read),
            "a directory above it must be searchable"
        );
        assert!(!permitted(
            &dir.join("missing"),
            stranger,
            &[gid],
            Access::Read
        ));
    }

    #[test]
    fn a_key_is_private_or_shared_with_its_readers_group() {
        let dir = scratch("share");
        let key = dir.join("agent.key");
        write_key(&key, b"k", None).unwrap();
        let mode = || fs::metadata(&key).unwrap().mode() & 0o777;
        assert_eq!(mode(), 0o600);
        let gid = rustix::process::getegid().as_raw();
        write_key(&key, b"k", Some(gid)).unwrap();
        assert_eq!((mode(), fs::metadata(&key).unwrap().gid()), (0o640, gid));
    }
}
