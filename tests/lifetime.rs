//! Nothing the agent or the dispatcher starts outlives it: scripts die with a
//! killed agent, SIGTERM kills jobs and closes their records, a restart kills
//! what a crash left of a job, hooks leave no children, exec failures still
//! read as such, and a full job store keeps results in memory until space
//! returns.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, jbool, jint, json, jstr, signal, Agent, Fixture, Tmpfs};

/// How long a process may take to be gone after it was killed.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A job that forks a `sleep` (pid in `$1.child`), writes its own pid to
/// `$1` and waits; without arguments it exits at once.
const JOB: &str = r#"[ -n "$1" ] || { echo quick; exit 0; }
sleep 1000 &
echo $! > "$1.child"
echo $$ > "$1"
wait"#;

/// True when `pid` no longer runs (gone, or a zombie awaiting its reaper).
fn process_dead(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits for a pid file the script writes and returns the pid.
fn read_pid(path: &Path) -> i32 {
    eventually("a pid file", Duration::from_secs(20), || {
        let text = fs::read_to_string(path).unwrap_or_default();
        match text.strip_suffix('\n').map(|t| t.trim().parse::<i32>()) {
            Some(Ok(pid)) => Ok(pid),
            _ => Err(format!("{} holds {text:?}", path.display())),
        }
    })
}

fn expect_gone(pid: i32, what: &str) {
    eventually(what, GONE_WITHIN, || {
        if process_dead(pid) {
            Ok(())
        } else {
            Err(format!("process {pid} still runs"))
        }
    });
}

/// `POST /run` straight to the agent as the dispatcher: (status, body).
fn run_on_agent(f: &Fixture, a: &Agent, body: &str) -> (u16, json::Value) {
    let r = f
        .agent_request(
            a.port,
            &f.dispatcher_cert(),
            "POST",
            "/run",
            Some(body.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("POST /run {body}: {e}\n{}", f.report()));
    let v = json::parse(&r.body).unwrap_or_else(|| panic!("reply is not JSON: {r:?}"));
    (r.status, v)
}

/// Starts `script` detached with `args` under `reqid`; returns the status.
fn submit(f: &Fixture, a: &Agent, script: &str, args: &[&str], reqid: &str) -> u16 {
    let args: Vec<String> = args.iter().map(|s| common::jquote(s)).collect();
    let body = format!(
        r#"{{"script":"{script}","args":[{}],"reqid":"{reqid}","async":true}}"#,
        args.join(",")
    );
    run_on_agent(f, a, &body).0
}

/// `GET /result/<reqid>` straight to the agent: (status, body).
fn result(f: &Fixture, a: &Agent, reqid: &str) -> (u16, json::Value) {
    let r = f
        .agent_request(
            a.port,
            &f.dispatcher_cert(),
            "GET",
            &format!("/result/{reqid}"),
            None,
        )
        .unwrap_or_else(|e| panic!("GET /result/{reqid}: {e}\n{}", f.report()));
    let v = json::parse(&r.body).unwrap_or_else(|| panic!("reply is not JSON: {r:?}"));
    (r.status, v)
}

/// The job record file of `reqid` in `runs`, parsed.
fn record(runs: &Path, reqid: &str) -> json::Value {
    let path = runs.join("it-dispatcher").join(format!("{reqid}.json"));
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    json::parse(&bytes).unwrap_or_else(|| panic!("{} is not JSON", path.display()))
}

fn wait_exited(f: &Fixture, a: &Agent) {
    eventually("the agent to exit", Duration::from_secs(20), || {
        f.exited(a.pid).map(|_| ()).ok_or_else(|| a.log_text())
    });
}

#[test]
fn killed_agent_takes_its_running_sync_script_with_it() {
    let f = Fixture::new("life_kill_sync");
    f.dispatcher("");
    let a = f.agent(
        "web1",
        &[("sleeper", r#"echo $$ > "$1"; exec sleep 1000"#)],
        "",
    );
    let pidfile = f.path("sleeper.pid");
    std::thread::scope(|s| {
        let run = s.spawn(|| f.ced(&["run", "web1", "sleeper", "--", pidfile.to_str().unwrap()]));
        let pid = read_pid(&pidfile);
        assert!(!process_dead(pid));
        f.kill(a.pid);
        expect_gone(pid, "the script of a killed agent to die");
        let _ = run.join();
    });
}

#[test]
fn restart_after_a_crash_kills_what_a_sync_script_forked() {
    let f = Fixture::new("life_crash_sync");
    f.dispatcher("");
    let mut a = f.agent("web1", &[("job", JOB)], "");
    let marks = a.state_dir.join("runs").join(".sync");
    let pidfile = f.path("job.pid");
    std::thread::scope(|s| {
        let run = s.spawn(|| f.ced(&["run", "web1", "job", "--", pidfile.to_str().unwrap()]));
        let (pid, child) = (read_pid(&pidfile), read_pid(&f.path("job.pid.child")));
        let mark = marks.join(format!("{pid}.json"));
        assert!(mark.exists(), "no mark at {}", mark.display());
        f.kill(a.pid);
        expect_gone(pid, "the sync script to die with the agent");
        assert!(
            !process_dead(child),
            "the forked child should outlive a crash"
        );
        let out = run.join().unwrap();
        assert!(
            !out.status.success(),
            "a run cut off by a crash is not a success"
        );

        f.serve(&mut a);
        // The agent serves only after its recovery.
        f.ced_ok(&["ping", "web1"]);
        assert!(
            process_dead(child),
            "the crashed run's child {child} still runs"
        );
        assert!(!mark.exists(), "the mark outlived its recovery");
        assert!(
            a.log_text().contains("ACTION=run-sync-killed"),
            "{}",
            a.log_text()
        );
    });
    // A sync run that ends leaves no mark.
    f.ced_ok(&["run", "web1", "job"]);
    assert_eq!(fs::read_dir(&marks).unwrap().count(), 0);
}

#[test]
fn sigterm_kills_a_sync_script_still_running_after_the_grace() {
    let f = Fixture::new("life_term_sync");
    f.dispatcher("");
    let a = f.agent("web1", &[("job", JOB)], "");
    let pidfile = f.path("job.pid");
    std::thread::scope(|s| {
        let run = s.spawn(|| f.ced(&["run", "web1", "job", "--", pidfile.to_str().unwrap()]));
        let (pid, child) = (read_pid(&pidfile), read_pid(&f.path("job.pid.child")));
        signal(a.pid, "TERM");
        wait_exited(&f, &a);
        expect_gone(pid, "the script to die with the agent");
        expect_gone(child, "what the script forked to die with the agent");
        let _ = run.join();
    });
}

#[test]
fn sigterm_kills_an_async_job_and_closes_its_record_as_lost() {
    let f = Fixture::new("life_term_async");
    f.dispatcher("");
    let mut a = f.agent("web1", &[("job", JOB)], "");
    let runs = a.state_dir.join("runs");
    let pidfile = f.path("job.pid");
    let first = "00000000000000c1";
    assert_eq!(
        submit(&f, &a, "job", &[pidfile.to_str().unwrap()], first),
        202
    );
    let (pid, child) = (read_pid(&pidfile), read_pid(&f.path("job.pid.child")));
    // One job per script.
    assert_eq!(submit(&f, &a, "job", &[], "00000000000000c2"), 409);

    signal(a.pid, "TERM");
    wait_exited(&f, &a);
    expect_gone(pid, "the job to die with the agent");
    expect_gone(child, "what the job forked to die with the agent");
    let rec = record(&runs, first);
    assert_eq!(
        jstr(&rec, "status"),
        Some("done"),
        "{}",
        common::jtext(&rec)
    );
    assert_eq!(jbool(&rec, "lost"), Some(true), "{}", common::jtext(&rec));
    assert_eq!(jint(&rec, "exit"), Some(-1));

    f.serve(&mut a);
    let (status, v) = result(&f, &a, first);
    assert_eq!(status, 200);
    assert_eq!(jbool(&v, "lost"), Some(true));
    assert!(common::jget(&v, "pgid").is_none(), "{}", common::jtext(&v));
    assert_eq!(submit(&f, &a, "job", &[], "00000000000000c3"), 202);
}

#[test]
fn restart_after_a_crash_kills_what_is_left_of_a_job_before_accepting_it_again() {
    let f = Fixture::new("life_crash_async");
    f.dispatcher("");
    let mut a = f.agent("web1", &[("job", JOB)], "");
    let runs = a.state_dir.join("runs");
    let pidfile = f.path("job.pid");
    let first = "00000000000000d1";
    assert_eq!(
        submit(&f, &a, "job", &[pidfile.to_str().unwrap()], first),
        202
    );
    let (pid, child) = (read_pid(&pidfile), read_pid(&f.path("job.pid.child")));
    let rec = eventually("the job's group on disk", Duration::from_secs(10), || {
        let rec = record(&runs, first);
        match jint(&rec, "pgid") {
            Some(_) => Ok(rec),
            None => Err(common::jtext(&rec)),
        }
    });
    assert_eq!(jint(&rec, "pgid"), Some(i64::from(pid)));

    f.kill(a.pid);
    expect_gone(pid, "the job's script to die with the agent");
    // What it forked has no death signal: it is left, and the record says running.
    assert!(
        !process_dead(child),
        "the forked child should outlive a crash"
    );
    assert_eq!(jstr(&record(&runs, first), "status"), Some("running"));

    f.serve(&mut a);
    // The agent serves only after its recovery, so once the new run is
    // accepted the old group is already gone.
    assert_eq!(submit(&f, &a, "job", &[], "00000000000000d2"), 202);
    assert!(
        process_dead(child),
        "the old job's child {child} still runs"
    );
    let rec = record(&runs, first);
    assert_eq!(
        jstr(&rec, "status"),
        Some("done"),
        "{}",
        common::jtext(&rec)
    );
    assert_eq!(jbool(&rec, "lost"), Some(true));
    assert!(
        a.log_text().contains("ACTION=run-async-killed"),
        "{}",
        a.log_text()
    );
    let done = eventually("the quick job to finish", Duration::from_secs(20), || {
        let (_, v) = result(&f, &a, "00000000000000d2");
        match jstr(&v, "status") {
            Some("done") => Ok(v),
            _ => Err(common::jtext(&v)),
        }
    });
    assert_eq!(jstr(&done, "stdout"), Some("quick\n"));
}

#[test]
fn hooks_that_fork_and_exit_leave_nothing_behind() {
    let f = Fixture::new("life_hooks");
    let ced_pid = f.path("ced-hook.pid");
    let cea_pid = f.path("cea-hook.pid");
    let hook = |name: &str, pidfile: &Path| -> PathBuf {
        f.script(
            name,
            &format!("sleep 1000 & echo $! > '{}'; exit 0", pidfile.display()),
        )
    };
    let ced_hook = hook("ced-hook", &ced_pid);
    let cea_hook = hook("cea-hook", &cea_pid);
    f.dispatcher(&format!("auth_hook = {}", ced_hook.display()));
    f.agent(
        "web1",
        &[("hello", "echo hi")],
        &format!("auth_hook = {}", cea_hook.display()),
    );
    let out = f.ced_ok(&["run", "web1", "hello", "--json"]);
    assert_eq!(jstr(&out.json(), "results.0.stdout"), Some("hi\n"), "{out}");
    expect_gone(
        read_pid(&ced_pid),
        "the dispatcher hook's child to be killed",
    );
    expect_gone(read_pid(&cea_pid), "the agent hook's child to be killed");
}

#[test]
fn exec_failure_and_a_real_exit_127_stay_apart() {
    let f = Fixture::new("life_exec");
    f.dispatcher("");
    let a = f.agent_files("web1", &[("broken", ""), ("gone", "exit 127")], "");
    let broken = a.scripts_dir.join("broken.sh");
    fs::write(&broken, "#!/nonexistent/interpreter\n").unwrap();
    let mut a = a;
    f.pair(&a);
    f.serve(&mut a);

    let out = f.ced(&["run", "web1", "broken", "--json"]);
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(127), "{out}");
    let stderr = jstr(&v, "results.0.stderr").unwrap_or_default();
    assert!(
        stderr.contains(&format!("cannot execute '{}'", broken.display()))
            && stderr.contains("No such file"),
        "{out}"
    );

    let out = f.ced(&["run", "web1", "gone", "--json"]);
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(127), "{out}");
    assert_eq!(jstr(&v, "results.0.stderr"), Some(""), "{out}");
}

#[test]
fn full_job_store_serves_the_result_from_memory_until_space_returns() {
    let f = Fixture::new("life_full_store");
    let runs = f.path("runs-tmpfs");
    let _tmpfs = match Tmpfs::mount(&runs, "64k") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipping full_job_store test: {why}");
            return;
        }
    };
    f.dispatcher("");
    // The job fills the store itself, after its running record was written.
    let a = f.agent(
        "web1",
        &[(
            "filler",
            r#"head -c 1048576 /dev/zero > "$2/fill" 2>/dev/null; echo $$ > "$1"; echo filled; exit 3"#,
        )],
        &format!("async_runs_dir = {}", runs.display()),
    );
    let pidfile = f.path("filler.pid");
    let reqid = "00000000000000e1";
    assert_eq!(
        submit(
            &f,
            &a,
            "filler",
            &[pidfile.to_str().unwrap(), runs.to_str().unwrap()],
            reqid
        ),
        202
    );
    let pid = read_pid(&pidfile);
    expect_gone(pid, "the filler job to end");
    let done = eventually("the result from memory", Duration::from_secs(10), || {
        let (status, v) = result(&f, &a, reqid);
        match jstr(&v, "status") {
            Some("done") if status == 200 => Ok(v),
            _ => Err(format!("{status} {}", common::jtext(&v))),
        }
    });
    assert_eq!(jint(&done, "exit"), Some(3));
    assert_eq!(jstr(&done, "stdout"), Some("filled\n"));
    // Not on disk: the store is full, the record there still says running.
    assert_eq!(jstr(&record(&runs, reqid), "status"), Some("running"));
    assert!(
        a.log_text().contains("ACTION=async-store-fail"),
        "{}",
        a.log_text()
    );
    // Never running again once it ended.
    for _ in 0..3 {
        assert_eq!(jstr(&result(&f, &a, reqid).1, "status"), Some("done"));
    }

    fs::remove_file(runs.join("fill")).unwrap();
    let started = Instant::now();
    let rec = eventually("the record on disk", Duration::from_secs(60), || {
        let rec = record(&runs, reqid);
        match jstr(&rec, "status") {
            Some("done") => Ok(rec),
            _ => Err(common::jtext(&rec)),
        }
    });
    assert_eq!(jint(&rec, "exit"), Some(3), "after {:?}", started.elapsed());
    assert_eq!(jstr(&result(&f, &a, reqid).1, "status"), Some("done"));
}
