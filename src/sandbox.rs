//! Confinement applied to a child before it execs its program: a private
//! mount namespace with some paths read-only (or everything read-only but a
//! few paths, plus a private `/tmp`), a trimmed capability bounding set kept
//! across the change of user as ambient capabilities, the new user and
//! groups, and `no_new_privs`.
//!
//! [`Sandbox::apply`] runs in the launcher (see [`crate::launch`]), which is
//! single-threaded and about to exec, so every change here affects only the
//! program to be run. It must run as root; every step fails closed: the
//! launcher reports the error and the program never runs.
//!
//! This is the crate's only `unsafe` code: `unshare(2)` is `unsafe` in rustix
//! because unsharing the descriptor table under running threads breaks their
//! view of descriptors. Here only `CLONE_NEWNS` is unshared, in a process
//! with one thread.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, StatVfsMountFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::process::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

/// Highest capability number tried when the kernel's own limit
/// (`/proc/sys/kernel/cap_last_cap`) cannot be read.
const CAP_LAST_FALLBACK: u32 = 63;

/// Options of the private `/tmp`: sticky and world-writable like a real one,
/// bounded so a script cannot fill memory through it.
const PRIVATE_TMP_OPTIONS: &std::ffi::CStr = c"mode=1777,size=64m";

/// How one child is confined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sandbox {
    /// The user the program runs as.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
    /// Capabilities kept (bit N = capability N): the bounding set is reduced
    /// to exactly these, and they are raised as ambient capabilities.
    pub caps: u64,
    /// Sets `no_new_privs`, so set-user-ID programs and file capabilities
    /// grant nothing.
    pub no_new_privs: bool,
    /// Bind-mounted read-only in the private namespace (missing ones skipped).
    pub read_only: Vec<PathBuf>,
    /// When not empty, the whole filesystem is read-only except these paths
    /// (which must exist) and a private `/tmp`.
    pub writable: Vec<PathBuf>,
}

/// Names the step that failed, for the launcher's message. Works for both
/// `rustix` errors and `std::io` errors.
trait Step<T> {
    fn step(self, what: impl std::fmt::Display) -> io::Result<T>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, what: impl std::fmt::Display) -> io::Result<T> {
        self.map_err(|e| {
            let e = e.into();
            io::Error::new(e.kind(), format!("{what}: {e}"))
        })
    }
}

impl Sandbox {
    /// The launcher arguments that carry this sandbox; [`Sandbox::parse`]
    /// reads them back.
    pub fn to_args(&self) -> Vec<OsString> {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        let mut out: Vec<OsString> = vec![
            self.uid.to_string().into(),
            self.gid.to_string().into(),
            if groups.is_empty() {
                "-".into()
            } else {
                groups.join(",").into()
            },
            format!("{:x}", self.caps).into(),
            if self.no_new_privs { "1" } else { "0" }.into(),
        ];
        for list in [&self.read_only, &self.writable] {
            out.push(list.len().to_string().into());
            out.extend(list.iter().map(|p| p.as_os_str().to_owned()));
        }
        out
    }

    /// Reads what [`Sandbox::to_args`] wrote from the front of `args`;
    /// returns the sandbox and how many arguments it took.
    pub fn parse(args: &[OsString]) -> Option<(Sandbox, usize)> {
        let text = |i: usize| args.get(i).and_then(|a| a.to_str());
        let uid = text(0)?.parse().ok()?;
        let gid = text(1)?.parse().ok()?;
        let groups = match text(2)? {
            "-" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        let caps = u64::from_str_radix(text(3)?, 16).ok()?;
        let no_new_privs = match text(4)? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let mut at = 5;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n: usize = text(at)?.parse().ok()?;
            at += 1;
            let paths = args.get(at..at.checked_add(n)?)?;
            list.extend(paths.iter().map(PathBuf::from));
            at += n;
        }
        let [read_only, writable] = lists;
        Some((
            Sandbox {
                uid,
                gid,
                groups,
                caps,
                no_new_privs,
                read_only,
                writable,
            },
            at,
        ))
    }

    /// Confines the calling process (see the module doc). Call only in a
    /// single-threaded process that execs next.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: only the mount namespace is unshared (not the descriptor
        // table, which is what makes unshare unsafe), and the launcher has a
        // single thread, so no other thread's view of anything changes.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
            .step("cannot create a private mount namespace")?;
        // Nothing done below may propagate back to the host's mounts.
        match rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        ) {
            // In a chroot, `/` need not be a mount point. That is safe only
            // when no mount here propagates to a peer (no `shared:` tag).
            Err(rustix::io::Errno::INVAL) if !any_shared_mount(&mount_table()?) => {}
            r => r.step("cannot make mounts private")?,
        }
        for path in &self.read_only {
            if path.exists() {
                bind_read_only(path)?;
            }
        }
        if !self.writable.is_empty() {
            read_only_root(&self.writable)?;
        }
        self.set_identity()
    }

    fn set_identity(&self) -> io::Result<()> {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(CAP_LAST_FALLBACK)
            .min(63);
        for cap in 0..=last {
            if self.caps & (1 << cap) == 0 {
                match rustix::thread::remove_capability_from_bounding_set(one_cap(cap)) {
                    // A number the kernel does not know: nothing to remove.
                    Err(rustix::io::Errno::INVAL) => {}
                    r => r.step(format!("cannot drop capability {cap}"))?,
                }
            }
        }
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        rustix::thread::set_thread_groups(&groups).step("setgroups")?;
        let gid = Gid::from_raw(self.gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid).step(format!("setgid {}", self.gid))?;
        // Keep the permitted set across setuid; it is trimmed right after.
        rustix::thread::set_keep_capabilities(true).step("cannot keep capabilities")?;
        let uid = Uid::from_raw(self.uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid).step(format!("setuid {}", self.uid))?;
        let kept = CapabilitySet::from_bits_retain(self.caps);
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: kept,
                permitted: kept,
                inheritable: kept,
            },
        )
        .step("capset")?;
        for cap in (0..64).filter(|c| self.caps & (1 << c) != 0) {
            rustix::thread::configure_capability_in_ambient_set(one_cap(cap), true)
                .step(format!("cannot raise ambient capability {cap}"))?;
        }
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true).step("cannot set no_new_privs")?;
        }
        Ok(())
    }
}

fn one_cap(n: u32) -> CapabilitySet {
    CapabilitySet::from_bits_retain(1 << n)
}

/// The per-mount flags of the mount holding `path`, to keep across a
/// remount (a remount that dropped `nosuid` would widen the mount).
fn mount_flags(path: &Path) -> io::Result<MountFlags> {
    let f = rustix::fs::statvfs(path)
        .step(format!("statvfs {}", path.display()))?
        .f_flag;
    let mut flags = MountFlags::empty();
    for (have, keep) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if f.contains(have) {
            flags |= keep;
        }
    }
    Ok(flags)
}

fn remount(path: &Path, read_only: bool) -> io::Result<()> {
    let mut flags = MountFlags::BIND | mount_flags(path)?;
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    rustix::mount::mount_remount(path, flags, "").step(format!("cannot remount {}", path.display()))
}

fn bind_read_only(path: &Path) -> io::Result<()> {
    rustix::mount::mount_bind_recursive(path, path)
        .step(format!("cannot bind {}", path.display()))?;
    remount(path, true)
}

/// Every mount read-only except `/dev` (device nodes such as `/dev/null`
/// must stay writable), then a private `/tmp`, then `writable` bound back
/// read-write. The writable paths are opened first, so one under `/tmp`
/// is still reachable after the private `/tmp` covers it.
fn read_only_root(writable: &[PathBuf]) -> io::Result<()> {
    let mut held = Vec::new();
    for path in writable {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .step(format!("writable path {}", path.display()))?;
        let is_dir = path.is_dir();
        held.push((path, fd, is_dir));
    }
    for mount in mount_points()? {
        if mount == Path::new("/dev") || mount.starts_with("/dev/") {
            continue;
        }
        match remount(&mount, true) {
            // Covered by a later mount on a parent: not reachable anyway.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => r?,
        }
    }
    rustix::mount::mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        PRIVATE_TMP_OPTIONS,
    )
    .step("cannot mount a private /tmp")?;
    for (path, fd, is_dir) in held {
        if path.starts_with("/tmp") && !path.exists() {
            let made = if is_dir {
                std::fs::create_dir_all(path)
            } else {
                path.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::File::create(path).map(drop))
            };
            made.step(format!("cannot recreate {} in /tmp", path.display()))?;
        }
        let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        rustix::mount::mount_bind_recursive(source.as_str(), path)
            .step(format!("cannot bind {}", path.display()))?;
        remount(path, false)?;
    }
    Ok(())
}

/// The mount points of this namespace, parents before children.
fn mount_points() -> io::Result<Vec<PathBuf>> {
    Ok(mount_table()?
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect())
}

fn mount_table() -> io::Result<Vec<u8>> {
    std::fs::read("/proc/self/mountinfo").step("/proc/self/mountinfo")
}

/// Whether any mount in a mountinfo table is shared with a peer group: its
/// optional fields (from the seventh up to the `-`) hold `shared:N`.
fn any_shared_mount(table: &[u8]) -> bool {
    table.split(|b| *b == b'\n').any(|line| {
        line.split(|b| *b == b' ')
            .skip(6)
            .take_while(|f| *f != b"-")
            .any(|f| f.starts_with(b"shared:"))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The capability numbers of `names` (`CAP_NET_BIND_SERVICE` and so on) as
/// a [`Sandbox::caps`] mask; `Err` names the first unknown one.
pub fn cap_mask(names: &[String]) -> Result<u64, String> {
    let mut mask = 0u64;
    for name in names {
        let n = CAP_NAMES
            .iter()
            .position(|c| name.strip_prefix("CAP_") == Some(c))
            .ok_or_else(|| format!("unknown capability '{name}'"))?;
        mask |= 1 << n;
    }
    Ok(mask)
}

/// Capability names without `CAP_`, by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_arguments_round_trip() {
        let sb = Sandbox {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4],
            caps: 1 << 10,
            no_new_privs: true,
            read_only: vec!["/etc/ctrl-exec-agent".into()],
            writable: vec!["/tmp/x".into(), "/var/a b".into()],
        };
        let mut args = sb.to_args();
        args.push("/bin/true".into());
        let (back, used) = Sandbox::parse(&args).unwrap();
        assert_eq!(back, sb);
        assert_eq!(args[used], "/bin/true");
        let empty = Sandbox::default();
        assert_eq!(Sandbox::parse(&empty.to_args()).unwrap().0, empty);
        assert!(Sandbox::parse(&args[..6]).is_none());
    }

    #[test]
    fn capability_names_map_to_their_numbers() {
        let m = cap_mask(&["CAP_NET_BIND_SERVICE".into(), "CAP_CHOWN".into()]).unwrap();
        assert_eq!(m, 0x401);
        assert_eq!(
            cap_mask(&["CAP_CHECKPOINT_RESTORE".into()]).unwrap(),
            1 << 40
        );
        assert!(cap_mask(&["CAP_BOGUS".into()])
            .unwrap_err()
            .contains("CAP_BOGUS"));
    }

    #[test]
    fn shared_mounts_are_found_in_the_optional_fields_only() {
        let private = b"22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
                        23 22 0:5 / /dev rw master:2 - devtmpfs udev rw\n";
        assert!(!any_shared_mount(private));
        let shared = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";
        assert!(any_shared_mount(shared));
        // After the separator it is the source, not a tag.
        assert!(!any_shared_mount(b"22 1 0:9 / /x rw - tmpfs shared:1 rw\n"));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape(br"/x\\y\01"), br"/x\\y\01");
    }
}
