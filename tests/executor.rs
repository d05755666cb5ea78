//! The executor role through the real binary: `ctrl-exec exec resolve` and
//! the `ctrl-exec-exec` name decide from their own reading of agent.conf and
//! scripts.conf.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ctrl-exec");

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ce_exec_{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("s")).unwrap();
    d
}

fn write_confs(d: &Path, profiles: &str, scripts: &str) -> (PathBuf, PathBuf) {
    let script = d.join("s/a.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let agent = d.join("agent.conf");
    fs::write(
        &agent,
        format!(
            "port = 7443\ncert = {0}/c.pem\nkey = {0}/k.pem\nca = {0}/ca.pem\nscript_dirs = {0}/s\n{profiles}",
            d.display()
        ),
    )
    .unwrap();
    let list = d.join("scripts.conf");
    fs::write(&list, scripts.replace("@", &d.display().to_string())).unwrap();
    (agent, list)
}

fn resolve(agent: &Path, list: &Path, name: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["exec", "resolve"])
        .arg(agent)
        .arg(list)
        .arg(name)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn resolve_prints_the_profile_or_the_deny_reason() {
    let d = temp("resolve");
    let (agent, list) = write_confs(
        &d,
        "[profile default]\nrun_as = nobody\ncaps = CAP_NET_BIND_SERVICE, CAP_CHOWN\n\
         writable = /var/tmp:/srv\n[profile open]\nno_new_privileges = off\n",
        "a = @/s/a.sh\nb = /bin/true\nc = @/s/a.sh profile=nope\nd = @/s/a.sh profile=open\n",
    );
    let path = d.join("s/a.sh");
    let (code, out, _) = resolve(&agent, &list, "a");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "OK path={} profile=default run_as=nobody nnp=1 caps=CAP_NET_BIND_SERVICE,CAP_CHOWN writable=/var/tmp:/srv\n",
            path.display()
        )
    );
    let (_, out, _) = resolve(&agent, &list, "d");
    assert_eq!(
        out,
        format!(
            "OK path={} profile=open run_as=root nnp=0 caps= writable=\n",
            path.display()
        )
    );
    for (name, want) in [
        ("b", "DENY not-in-script-dirs\n"),
        ("c", "DENY undefined-profile\n"),
        ("zz", "DENY not-allowlisted\n"),
    ] {
        assert_eq!(
            resolve(&agent, &list, name),
            (0, want.to_string(), String::new()),
            "{name}"
        );
    }
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn resolve_config_errors_exit_2_naming_the_file() {
    let d = temp("resolve_err");
    let (agent, list) = write_confs(&d, "[profile a/b]\n", "a = @/s/a.sh\n");
    let (code, out, err) = resolve(&agent, &list, "a");
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains(&agent.display().to_string()), "{err}");
    let (code, _, err) = resolve(&d.join("missing.conf"), &list, "a");
    assert_eq!(code, 2);
    assert!(err.contains("missing.conf"), "{err}");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn the_role_answers_to_its_own_name_and_refuses_bad_usage() {
    let d = temp("argv0");
    let link = d.join("ctrl-exec-exec");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let (agent, list) = write_confs(&d, "[profile default]\n", "a = @/s/a.sh\n");
    let out = Command::new(&link)
        .arg("resolve")
        .arg(&agent)
        .arg(&list)
        .arg("a")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK path="));
    let out = Command::new(&link).arg("nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "usage errors are EX_USAGE");
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: ctrl-exec-exec"));
    let _ = fs::remove_dir_all(&d);
}
