//! The Debian packages, for real: `scripts/deb.sh` builds them from the test
//! binary, and `scripts/test-deb.sh` installs them into a fresh debootstrap
//! root and follows the README's quickstart there (pairing, a run through
//! the executor as the service user), in private namespaces.
//!
//! Needs root, debootstrap, dpkg-deb and unshare (`make test` installs
//! debootstrap when root); skips with a printed reason otherwise.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ctrl-exec");

fn missing(tool: &str) -> bool {
    !Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_packages_install_pair_and_run_in_a_fresh_debian_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: installing packages into a debootstrap root needs root");
        return;
    }
    for tool in ["debootstrap", "dpkg-deb", "unshare", "ip"] {
        if missing(tool) {
            eprintln!("skipped: {tool} is not installed");
            return;
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let debs = tmp.join(format!("debs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&debs);
    let built = Command::new("sh")
        .arg(repo.join("scripts/deb.sh"))
        .arg(BIN)
        .arg("")
        .arg(&debs)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&built.stdout).into_owned();
    assert!(
        built.status.success(),
        "deb.sh: {listing}\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    for package in ["ctrl-exec_", "ctrl-exec-agent_", "ctrl-exec-dispatcher_"] {
        assert!(listing.contains(package), "{listing}");
    }
    let out = Command::new("bash")
        .arg(repo.join("scripts/test-deb.sh"))
        .arg(&debs)
        .current_dir(repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&debs);
    assert!(
        out.status.success() && stdout.contains("QUICKSTART OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("hello from agent1 as ctrl-exec-agent"),
        "{stdout}"
    );
}
