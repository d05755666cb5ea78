//! What `scripts/install.sh` lays down, staged with DESTDIR for each init
//! system: the binary and every role link, the service files (the executor
//! included), and seed configs that the real binary accepts, with scripts
//! going through the executor by default.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ctrl-exec");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `install.sh <roles> --init <init>` staged into `dest`.
fn install_into(dest: &Path, init: &str, roles: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(repo().join("scripts/install.sh"))
        .args(roles)
        .args(["--init", init, "--binary", BIN])
        .env("DESTDIR", dest)
        .output()
        .unwrap()
}

/// Stages `install.sh <roles> --init <init>` into a fresh directory.
fn stage(init: &str, roles: &[&str]) -> PathBuf {
    let dest = std::env::temp_dir().join(format!("ce_pkg_{init}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dest);
    fs::create_dir_all(&dest).unwrap();
    let out = install_into(&dest, init, roles);
    assert!(
        out.status.success(),
        "install.sh --init {init}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dest
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_shell_syntax(path: &Path) {
    let out = Command::new("sh").arg("-n").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The seeded agent.conf and scripts.conf load in the executor (as it
/// will read them) and name the executor socket `socket`.
fn assert_agent_seed(dest: &Path, socket: &str) {
    let conf = dest.join("etc/ctrl-exec-agent/agent.conf");
    let text = read(&conf);
    assert!(
        text.contains(&format!("\nexecutor_socket = {socket}\n")),
        "{text}"
    );
    assert!(
        text.contains("\n[profile default]\nrun_as = ctrl-exec-agent\n"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["exec", "resolve"])
        .arg(&conf)
        .arg(dest.join("etc/ctrl-exec-agent/scripts.conf"))
        .arg("nothing-allowlisted")
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(0), "DENY not-allowlisted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_install_has_every_link_unit_and_an_executor_seed() {
    let dest = stage("systemd", &["--agent", "--dispatcher", "--api"]);
    let bin = dest.join("usr/local/bin");
    for link in [
        "ced",
        "ctrl-exec-dispatcher",
        "cea",
        "ctrl-exec-agent",
        "ctrl-exec-api",
        "ctrl-exec-exec",
    ] {
        let target = fs::read_link(bin.join(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(target, Path::new("ctrl-exec"), "{link}");
    }
    let units = dest.join("etc/systemd/system");
    for unit in [
        "ctrl-exec-agent.service",
        "ctrl-exec-exec.service",
        "ctrl-exec-api.service",
        "ctrl-exec-maintenance.service",
        "ctrl-exec-maintenance.timer",
    ] {
        assert!(units.join(unit).is_file(), "{unit}");
    }
    let agent = read(&units.join("ctrl-exec-agent.service"));
    assert!(agent.contains("Wants=network-online.target ctrl-exec-exec.service"));
    assert!(agent.contains("RestartPreventExitStatus=78"));
    let exec = read(&units.join("ctrl-exec-exec.service"));
    assert!(exec.contains("RuntimeDirectory=ctrl-exec-agent"), "{exec}");
    assert!(
        exec.contains("serve /run/ctrl-exec-agent/exec.sock"),
        "{exec}"
    );
    assert_agent_seed(&dest, "/run/ctrl-exec-agent/exec.sock");
    let _ = fs::remove_dir_all(&dest);
}

#[test]
fn openrc_install_supervises_the_agent_and_the_executor() {
    let dest = stage("openrc", &["--agent"]);
    for name in ["ctrl-exec-agent", "ctrl-exec-exec"] {
        let script = dest.join("etc/init.d").join(name);
        assert_shell_syntax(&script);
        let text = read(&script);
        for needle in [
            "supervisor=\"supervise-daemon\"",
            "respawn_max=5",
            "respawn_period=300",
        ] {
            assert!(text.contains(needle), "{name}: {needle}");
        }
    }
    let agent = read(&dest.join("etc/init.d/ctrl-exec-agent"));
    assert!(agent.contains("check-start --config"), "{agent}");
    assert!(agent.contains("need ctrl-exec-exec"), "{agent}");
    assert!(read(&dest.join("etc/init.d/ctrl-exec-exec")).contains("\"$command\" check "));
    assert_agent_seed(&dest, "/run/ctrl-exec-agent/exec.sock");
    let _ = fs::remove_dir_all(&dest);
}

#[test]
fn procd_install_runs_both_instances_from_one_script_with_bounded_respawn() {
    let dest = stage("procd", &["--agent"]);
    let script = dest.join("etc/init.d/ctrl-exec-agent");
    assert_shell_syntax(&script);
    assert!(!dest.join("etc/init.d/ctrl-exec-exec").exists());
    let text = read(&script);
    assert_eq!(text.matches("procd_set_param respawn 3600 5 5").count(), 2);
    for needle in [
        "procd_open_instance executor",
        "procd_open_instance agent",
        "service_triggers()",
        "check-start --config",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
    assert_agent_seed(&dest, "/var/run/ctrl-exec-agent/exec.sock");
    let _ = fs::remove_dir_all(&dest);
}

#[test]
fn a_second_install_keeps_edited_configs() {
    let dest = stage("none", &["--agent"]);
    let conf = dest.join("etc/ctrl-exec-agent/agent.conf");
    fs::write(&conf, "port = 9999\n").unwrap();
    let out = install_into(&dest, "none", &["--agent"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("kept existing /etc/ctrl-exec-agent/agent.conf"));
    assert_eq!(read(&conf), "port = 9999\n");
    let _ = fs::remove_dir_all(&dest);
}

#[test]
fn the_ipk_has_the_layout_opkg_and_procd_expect() {
    let out_dir = std::env::temp_dir().join(format!("ce_ipk_{}", std::process::id()));
    let _ = fs::remove_dir_all(&out_dir);
    let built = Command::new("sh")
        .arg(repo().join("scripts/ipk.sh"))
        .arg(BIN)
        .arg("")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ipk = out_dir.join("ctrl-exec-agent_0.1.0_x86_64.ipk");
    let check = |path: &Path| {
        Command::new("sh")
            .arg(repo().join("scripts/check-ipk.sh"))
            .arg(path)
            .output()
            .unwrap()
    };
    let good = check(&ipk);
    assert_eq!(
        (
            good.status.code(),
            String::from_utf8_lossy(&good.stdout).trim()
        ),
        (Some(0), "ipk layout OK")
    );
    // The check itself catches a package missing its parts.
    let bare = out_dir.join("bare.ipk");
    fs::write(out_dir.join("debian-binary"), "2.0\n").unwrap();
    let made = Command::new("tar")
        .arg("-C")
        .arg(&out_dir)
        .arg("-czf")
        .arg(&bare)
        .arg("./debian-binary")
        .status()
        .unwrap();
    assert!(made.success());
    let broken = check(&bare);
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("ipk: members are"));
    let _ = fs::remove_dir_all(&out_dir);
}

#[test]
fn the_apkbuild_names_only_files_it_ships_and_parses() {
    let dir = repo().join("packaging/alpine");
    let apkbuild = dir.join("APKBUILD");
    assert_shell_syntax(&apkbuild);
    let text = read(&apkbuild);
    let install = text
        .lines()
        .find_map(|l| l.strip_prefix("install=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("an install= line");
    let scripts: Vec<String> = install
        .split_whitespace()
        .map(|s| s.replace("$pkgname", "ctrl-exec"))
        .collect();
    assert_eq!(scripts.len(), 4, "{install}");
    for script in &scripts {
        assert_shell_syntax(&dir.join(script));
    }
    assert!(
        text.contains("--init openrc"),
        "the subpackages carry the OpenRC services"
    );
}
