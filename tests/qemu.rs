//! An aarch64 agent, the static musl build, under qemu-user: it pairs with
//! the x86_64 dispatcher through the real flow and runs a script. The
//! binary is `target/aarch64-unknown-linux-musl/debug/ctrl-exec`, which
//! `make test` builds when qemu-user and the cross linker are there (and
//! installs them when root). The agent re-executes itself to launch
//! scripts, so the kernel must run aarch64 binaries: the test registers a
//! binfmt_misc entry for qemu-aarch64-static when none exists, and removes
//! it when done. Skips with a printed reason when any of that is missing.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{jint, jstr, Fixture};

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
const ENTRY: &str = "ce-qemu-aarch64";
/// The ELF header of an aarch64 executable, and its mask (binfmt_misc's
/// escaped form, as Debian's qemu-user-static registers it), with F (the
/// interpreter is opened now) and P (argv[0] is kept: it names the role).
const REGISTRATION: &str = concat!(
    ":ce-qemu-aarch64:M::",
    r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
    ":",
    r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    ":/usr/bin/qemu-aarch64-static:FP"
);

fn aarch64_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/aarch64-unknown-linux-musl/debug/ctrl-exec")
}

/// Removes the binfmt entry this test added, if it added one.
struct Registered(bool);

impl Drop for Registered {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::write(Path::new(BINFMT).join(ENTRY), "-1");
        }
    }
}

/// Makes the kernel run aarch64 ELF files through qemu; `None` (with the
/// reason printed) when it cannot.
fn aarch64_runs() -> Option<Registered> {
    let already = fs::read_dir(BINFMT).ok()?.flatten().any(|e| {
        fs::read_to_string(e.path()).is_ok_and(|t| {
            t.contains("enabled") && t.contains("7f454c460201010000000000000000000200b700")
        })
    });
    if already {
        return Some(Registered(false));
    }
    if !Path::new("/usr/bin/qemu-aarch64-static").exists() {
        eprintln!("skipped: /usr/bin/qemu-aarch64-static not installed (apt-get install qemu-user-static)");
        return None;
    }
    if !Path::new(BINFMT).join("register").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT])
            .status();
    }
    match fs::write(Path::new(BINFMT).join("register"), REGISTRATION) {
        Ok(()) => Some(Registered(true)),
        Err(e) => {
            eprintln!("skipped: cannot register qemu-aarch64 with binfmt_misc: {e}");
            None
        }
    }
}

#[test]
fn an_aarch64_agent_under_qemu_pairs_and_runs_a_script() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: registering qemu with binfmt_misc needs root");
        return;
    }
    let a64 = aarch64_binary();
    if !a64.exists() {
        eprintln!(
            "skipped: no {} (make test builds it when qemu-user is installed)",
            a64.display()
        );
        return;
    }
    let Some(_registered) = aarch64_runs() else {
        return;
    };
    let f = Fixture::new("qemu_a64");
    f.dispatcher("");
    // The dispatcher stays x86_64; every `cea` is the aarch64 build.
    let cea = f.path("bin/cea");
    fs::remove_file(&cea).unwrap();
    symlink(&a64, &cea).unwrap();
    let mut cmd = f.cmd("cea");
    cmd.arg("--version");
    let version = f.run(cmd);
    assert!(version.stdout.starts_with("ctrl-exec-agent "), "{version}");

    let a = f.agent(
        "arm1",
        &[("echo", r#"printf '%s|' "$@"; cat >/dev/null"#)],
        "",
    );
    let exe = fs::read_link(format!("/proc/{}/exe", a.pid)).unwrap_or_default();
    assert!(
        exe.to_string_lossy().contains("qemu-aarch64"),
        "the agent is not emulated: {}",
        exe.display()
    );
    let out = f.ced_ok(&["run", "arm1", "echo", "--json", "--", "one", "two words"]);
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(0), "{out}");
    assert_eq!(
        jstr(&v, "results.0.stdout"),
        Some("one|two words|"),
        "{out}"
    );
    let ping = f.ced_ok(&["ping", "arm1", "--json"]);
    assert_eq!(jstr(&ping.json(), "results.0.status"), Some("ok"), "{ping}");
}
