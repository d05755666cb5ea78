//! A generic OpenAPI client against the real API: schemathesis (from PyPI,
//! installed into `target/schemathesis-venv` on first use) runs every check
//! on `/openapi.json` with a small example count and must find nothing.
//! Skipped, with the reason printed, when Python or PyPI is not reachable.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Fixture;

/// Examples per operation: enough to reach every status path of the spec
/// in well under a minute.
const EXAMPLES: &str = "20";

fn schemathesis() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let bin = venv.join("bin").join("schemathesis");
    if bin.exists() {
        return Some(bin);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: python3 -m venv failed");
        return None;
    }
    let pip = Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", "schemathesis"])
        .status();
    if !pip.is_ok_and(|s| s.success()) || !bin.exists() {
        eprintln!("skipped: cannot install schemathesis from PyPI");
        return None;
    }
    Some(bin)
}

#[test]
fn a_generic_openapi_client_finds_nothing() {
    let Some(st) = schemathesis() else { return };
    let f = Fixture::new("openapi_client");
    f.dispatcher("api_auth_default = allow");
    f.agent("web1", &[("hello", "echo hi")], "");
    let port = f.api();
    let mut c = Command::new(st);
    c.args(["run", &format!("http://127.0.0.1:{port}/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--workers",
            "1",
        ])
        .args(["--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(f.path(""));
    let out = f.run_within(c, Duration::from_secs(300));
    assert!(out.status.success(), "{out}");
}
