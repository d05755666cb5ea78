//! The dispatcher's files: every state file has its documented mode
//! whatever the umask.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Fixture;

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs `ced <args>` with the umask set to 077 first.
fn ced_under_umask_077(f: &Fixture, args: &[&str]) {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"umask 077; exec "$0" "$@""#)
        .arg(f.dir.join("bin/ced"))
        .arg("--config")
        .arg(&f.conf)
        .args(args)
        .current_dir(&f.dir)
        .env_remove("ENVEXEC_TOKEN");
    let out = f.run(c);
    f.expect_success(&out);
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn state_files_have_their_documented_modes_under_umask_077() {
    let f = Fixture::new("disk_umask");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    let state = f.path("dispatcher/state");
    let registry = f.registry_dir();
    // Created afresh by the commands below, under the umask.
    let _ = fs::remove_file(registry.join(".registry.lock"));
    let _ = fs::remove_dir_all(state.join("locks"));
    let _ = fs::remove_dir_all(state.join("runs"));

    ced_under_umask_077(
        &f,
        &["edit-agent", "web1", "--agent-port", &a.port.to_string()],
    );
    ced_under_umask_077(&f, &["run", "web1", "hello"]);
    ced_under_umask_077(&f, &["run", "web1", "hello", "--async"]);

    let lock = state.join("locks/web1--hello.lock");
    let records = files_under(&state.join("runs"));
    assert_eq!(records.len(), 1, "{records:?}");
    let want = [
        (registry.join(".registry.lock"), 0o660),
        (registry.join("web1.json"), 0o644),
        (state.join("locks"), 0o770),
        (lock, 0o660),
        (state.join("runs"), 0o750),
        (records[0].clone(), 0o640),
    ];
    for (path, m) in want {
        assert_eq!(
            mode(&path),
            m,
            "{} is {:o}, documented {m:o}",
            path.display(),
            mode(&path)
        );
    }
}
