//! Revocation from the dispatcher host: `ced unpair --revoke` (the
//! dispatcher refuses the agent's certificate) and `ced revoke-dispatcher`
//! (agents refuse a dispatcher serial at once, without reload).

mod common;

use common::Fixture;

#[test]
fn unpaired_and_revoked_agent_is_refused_even_with_its_record_put_back() {
    let f = Fixture::new("rev_unpair");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    f.ced_ok(&["run", "web1", "hello"]);
    let record_path = f.registry_dir().join("web1.json");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(record.contains(r#""serial":""#), "{record}");

    let out = f.ced_ok(&["unpair", "web1", "--revoke"]);
    assert!(out.stdout.contains("Unregistered 'web1'."), "{out}");
    assert!(
        out.stdout.contains("Revoked agent certificate serial"),
        "{out}"
    );
    assert!(
        out.stdout.contains("Revoked agent public key sha256"),
        "{out}"
    );
    let list = std::fs::read_to_string(f.path("dispatcher/state/revoked-agents")).unwrap();
    assert!(list.lines().any(|l| l.starts_with("serial ")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("key ")), "{list}");

    // The record, put back by hand as it was: refused before any request.
    std::fs::write(&record_path, &record).unwrap();
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout
            .contains("agent 'web1' presented a revoked certificate (serial "),
        "{out}"
    );
    assert!(!out.stdout.contains("hello from web1"), "{out}");

    // A record without pin or serial (as older or hand-made ones are): the
    // certificate itself is still refused.
    f.write_registry_record("web1", a.port);
    let out = f.ced(&["ping", "web1"]);
    assert!(
        out.stdout.contains("presented a revoked certificate"),
        "{out}"
    );
    // Nothing reached the agent's handlers after the revocation.
    assert_eq!(a.log_count("ping"), 0, "{}", a.log_text());
    assert_eq!(a.log_count("run"), 1, "{}", a.log_text());
}

#[test]
fn unpair_without_revoke_keeps_the_warning_and_needs_a_record_to_revoke() {
    let f = Fixture::new("rev_unpair_plain");
    f.dispatcher("");
    f.write_registry_record("old1", 7443);
    let out = f.ced(&["unpair", "old1", "--revoke"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("neither a certificate serial nor a pinned key"),
        "{out}"
    );
    assert!(f.registry_dir().join("old1.json").exists());
    let out = f.ced_ok(&["unpair", "old1"]);
    assert!(
        out.stdout
            .contains("WARNING: Agent certificate remains valid"),
        "{out}"
    );
}
