//! End to end through the real binary: a CA, a dispatcher, one agent paired
//! for real on 127.0.0.1, and runs through `ced` and the API. Kept
//! self-contained so it reads as the shortest complete use of the system.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Deployment {
    dir: PathBuf,
    conf: PathBuf,
    children: Vec<Child>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(self.dir.join("ced"))
            .args(["--config"])
            .arg(&self.conf)
            .args(["pairing-mode", "stop"])
            .output();
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads lines from `child`'s stdout until one contains `marker`, under a deadline.
fn line_with(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("server printed its address")
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pause = Duration::from_millis(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn deploy(name: &str) -> Deployment {
    let dir = std::env::temp_dir().join(format!("ctrl-exec-smoke-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    for link in ["ced", "cea", "ctrl-exec-api"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ctrl-exec"), dir.join(link)).unwrap();
    }
    let conf = dir.join("ctrl-exec.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "cert = {d}/ctrl-exec.crt\nkey = {d}/ctrl-exec.key\nca = {d}/ca.crt\nca_dir = {d}\nstate_dir = {d}/state\n\
             pairing_bind = 127.0.0.1\napi_bind = 127.0.0.1\napi_port = 0\napi_auth_default = allow\n"
        ),
    )
    .unwrap();
    Deployment {
        dir,
        conf,
        children: Vec::new(),
    }
}

impl Deployment {
    fn ced(&self, args: &[&str]) -> Output {
        Command::new(self.dir.join("ced"))
            .arg("--config")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap()
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join("scripts").join(format!("{name}.sh"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::process::Command::new("chmod")
            .arg("755")
            .arg(&p)
            .status()
            .unwrap();
        p
    }

    /// Sets up the CA and dispatcher, pairs agent `web1` and starts it.
    fn pair_and_serve(&mut self) {
        check("setup-ca", &self.ced(&["setup-ca"]));
        check("setup-ctrl-exec", &self.ced(&["setup-ctrl-exec"]));
        let started = self.ced(&["pairing-mode", "start", "--port", "0", "--timeout", "120"]);
        check("pairing-mode start", &started);
        let text = String::from_utf8_lossy(&started.stdout).into_owned();
        let port = text
            .split("on port ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("pairing port")
            .to_string();
        let d = self.dir.display().to_string();
        let echo = self.script(
            "echo-args",
            "for a in \"$@\"; do printf '<%s>' \"$a\"; done",
        );
        let fail = self.script("fail", "echo out; echo err >&2; exit 3");
        std::fs::write(
            self.dir.join("scripts.conf"),
            format!(
                "echo-args = {}\nfail = {}\n",
                echo.display(),
                fail.display()
            ),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("agent.conf"),
            format!(
                "port = 0\nbind = 127.0.0.1\nhostname = web1\ncert = {d}/agent.crt\nkey = {d}/agent.key\nca = {d}/agent-ca.crt\n\
                 state_dir = {d}/agent-state\nrevoked_serials = {d}/revoked\nrate_limit_disable = 1\n"
            ),
        )
        .unwrap();
        let agent_conf = self.dir.join("agent.conf");
        let request = Command::new(self.dir.join("cea"))
            .arg("--config")
            .arg(&agent_conf)
            .args([
                "request-pairing",
                "--dispatcher",
                "127.0.0.1",
                "--port",
                &port,
                "--background",
                "--timeout",
                "60",
            ])
            .output()
            .unwrap();
        check("request-pairing", &request);
        let reqid = String::from_utf8_lossy(&request.stdout).trim().to_string();
        check("approve", &self.ced(&["approve", &reqid]));
        let trusted = self.dir.join("agent-state/ctrl-exec-dispatchers");
        eventually("the agent to store its certificate", || trusted.exists());
        let mut agent = Command::new(self.dir.join("cea"))
            .arg("--config")
            .arg(&agent_conf)
            .arg("--allowlist")
            .arg(self.dir.join("scripts.conf"))
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let line = line_with(&mut agent, "listening on");
        self.children.push(agent);
        let agent_port = line.rsplit(':').next().unwrap().trim().to_string();
        check(
            "edit-agent",
            &self.ced(&["edit-agent", "web1", "--agent-port", &agent_port]),
        );
    }
}

fn json_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &text[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn paired_agent_runs_allowlisted_scripts_with_exact_arguments() {
    let mut dep = deploy("run");
    dep.pair_and_serve();
    let tricky = [
        "a b",
        "it's",
        "\"q\"",
        "$(id)",
        "*",
        "",
        "line\nbreak",
        "ünï",
    ];
    let mut args = vec!["run", "--json", "web1", "echo-args", "--"];
    args.extend(tricky);
    let out = dep.ced(&args);
    check("ced run", &out);
    let expected: String = tricky.iter().map(|a| format!("<{a}>")).collect();
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout = json_field(&text, "stdout").expect("stdout field");
    let want = format!(
        "\"{}\"",
        expected
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    );
    assert_eq!(
        stdout, want,
        "arguments must arrive byte-exact; reply: {text}"
    );

    let failed = dep.ced(&["run", "--json", "web1", "fail"]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "a failing script makes ced exit 1"
    );
    assert_eq!(
        json_field(&String::from_utf8_lossy(&failed.stdout), "exit"),
        Some("3")
    );

    let refused = dep.ced(&["run", "web1", "not-listed"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("script not permitted"));

    let unknown = dep.ced(&["run", "nosuchhost", "echo-args"]);
    assert_ne!(unknown.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown agent"));
}

#[test]
fn api_runs_a_script_and_answers_errors_in_json() {
    let mut dep = deploy("api");
    dep.pair_and_serve();
    let mut api = Command::new(dep.dir.join("ctrl-exec-api"))
        .arg("--config")
        .arg(&dep.conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = line_with(&mut api, "listening on");
    dep.children.push(api);
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .to_string();
    let request = |raw: String| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    let post = |path: &str, body: &str| {
        request(format!(
            "POST {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let ok = post(
        "/run",
        r#"{"hosts":["web1"],"script":"echo-args","args":["x y"]}"#,
    );
    assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
    assert!(ok.contains(r#""stdout":"<x y>""#), "{ok}");
    let unknown = post("/run", r#"{"hosts":["ghost"],"script":"echo-args"}"#);
    assert!(
        unknown.starts_with("HTTP/1.0 404") && unknown.contains("not a registered agent: ghost"),
        "{unknown}"
    );
    let bad = post("/run", "{");
    assert!(
        bad.starts_with("HTTP/1.0 400") && bad.contains("invalid JSON body"),
        "{bad}"
    );
    let headers: String = (0..33).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = request(format!("GET /health HTTP/1.0\r\n{headers}\r\n"));
    assert!(many.starts_with("HTTP/1.0 431"), "{many}");
    let big = request("POST /run HTTP/1.0\r\nContent-Length: 1048577\r\n\r\n{}".into());
    assert!(big.starts_with("HTTP/1.0 413"), "{big}");
    let _ = Path::new(&addr);
}
