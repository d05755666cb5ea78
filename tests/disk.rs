//! The dispatcher's files: a run that cannot be recorded is refused before
//! any agent sees it (full run store, from `ced` and the API), and every
//! state file has its documented mode whatever the umask.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{jstr, post, Fixture, Tmpfs};

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

#[test]
fn run_that_cannot_be_recorded_is_refused_before_any_agent_sees_it() {
    let f = Fixture::new("disk_full");
    f.dispatcher("api_auth_default = allow");
    let marker = f.path("script-ran");
    let a = f.agent(
        "web1",
        &[("mark", &format!("touch '{}'", marker.display()))],
        "",
    );
    let runs = f.path("dispatcher/state/runs");
    let tmpfs = match Tmpfs::mount(&runs, "64k") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs as the run store: {why}");
            return;
        }
    };
    let filler = tmpfs.fill();
    let port = f.api();

    let out = f.ced(&["run", "web1", "mark", "--async"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr
            .contains("cannot record run: No space left on device"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("reqid") && out.stdout.trim().is_empty(),
        "no reqid is handed out\n{out}"
    );
    let out = f.ced(&["run", "web1", "mark", "--async", "--json"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert_eq!(
        jstr(&out.json(), "error"),
        Some("cannot record run"),
        "{out}"
    );

    for body in [
        r#"{"hosts":["web1"],"script":"mark","async":true}"#,
        r#"{"hosts":["web1"],"script":"mark"}"#,
    ] {
        let r = post(port, "/run", body);
        assert_eq!(r.status, 507, "{body}: {r}");
        let v = r.json();
        assert_eq!(jstr(&v, "error"), Some("cannot record run"), "{r}");
        assert!(
            jstr(&v, "detail").is_some_and(|d| d.contains("No space left on device")),
            "{r}"
        );
        assert!(jstr(&v, "reqid").is_none(), "{r}");
    }

    // Each refusal came back after the fan-out would have finished, so an
    // agent that had been asked would have stored the job or run the script.
    let jobs = files_under(&a.state_dir.join("runs"));
    assert!(jobs.is_empty(), "the agent stored jobs: {jobs:?}");
    assert!(!marker.exists(), "the script ran\n{}", f.report());
    assert_eq!(
        a.log_count("run-async") + a.log_count("run"),
        0,
        "{}",
        a.log_text()
    );

    // With room again the same run is recorded and can be looked up.
    fs::remove_file(&filler).expect("remove filler");
    let out = f.ced_ok(&["run", "web1", "mark", "--async", "--json"]);
    let reqid = jstr(&out.json(), "reqid").expect("reqid").to_string();
    f.ced_ok(&["status", &reqid]);
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
