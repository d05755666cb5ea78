//! `ced <mode> --help`: each mode's own flags and exit codes.

/// (mode, help text).
pub(super) const MODES: &[(&str, &str)] = &[
    ("run", "Usage: ced run <host>[:<port>] [<host>...] <script> [-- <arg>...]
Runs an allowlisted script on each host; arguments go to exec unchanged.
  --async              submit and print a reqid (see status, wait)
  --json               one JSON document on stdout
  --hosts-file <f|->   more hosts, one per line (- reads stdin)
  --tags k=v[,k=v]     every registered agent with all those tags
  --port <n>           agent port for hosts given as names
  --username <s>, --token <s>   identity for the auth hook
Exit: 0 all hosts exited 0 (--async: at least one accepted), 1 otherwise
(a host failed, hook denied, lock held, too many hosts), 64 usage.
"),
    ("status", "Usage: ced status <reqid> [--json]
Shows an async run, fetching pending hosts from their agents.
Exit: 0 complete and every host exited 0, 1 otherwise or unknown reqid, 64 usage.
"),
    ("wait", "Usage: ced wait <reqid> [--timeout <s>] [--json]
Polls an async run until it completes (default timeout 300 s).
Exit: 0 complete and every host exited 0, 1 a host failed or unknown reqid,
2 still pending at the timeout, 64 usage.
"),
    ("ping", "Usage: ced ping <host>[:<port>] [<host>...] [--json]
Checks each agent over mTLS and renews certificates past half of cert_days.
  --hosts-file <f|->, --tags k=v[,k=v], --port <n>   as for run
Exit: 0 once hosts were asked (read each line), 1 setup failure, 64 usage.
"),
    ("pairing-mode", "Usage: ced pairing-mode [start|stop] [--timeout <1-600>] [--port <n>]
Opens the pairing listener (default port 7444): interactive, or start/stop
in the background. Exit: 0, 1 failure, 64 usage.
"),
    ("list-requests", "Usage: ced list-requests [--json]
Lists pending pairing requests with their codes; marks names already registered.
"),
    ("approve", "Usage: ced approve <reqid>... [--replace] [--lookup-by ip|hostname] [--ip <addr>] [--agent-port <n>]
       ced approve --codes-file <file|-> [--replace] [--lookup-by ip|hostname]
Signs pending requests. --replace is needed when a name is registered;
--ip and --agent-port take one request only. --codes-file approves each
pending request whose host name and pairing code (computed from its CSR)
match a '<hostname> <code>' line, as 'cea request-pairing --background'
prints them on stderr; the rest are reported and stay pending.
Exit: 0 all approved, 1 any refused or failed, 64 usage.
"),
    ("deny", "Usage: ced deny <reqid>\nRefuses a pending pairing request. Exit: 0, 1 unknown reqid.\n"),
    ("setup-ca", "Usage: ced setup-ca\nCreates the CA (P-256, 10 years) and prints its fingerprint. Exit: 0, 1.\n"),
    ("setup-ctrl-exec", "Usage: ced setup-ctrl-exec\nCreates the dispatcher key and certificate from the CA. Exit: 0, 1.\n"),
    ("list-agents", "Usage: ced list-agents [--json] [--tags k=v[,k=v...]]
Lists registered agents with certificate expiry and days left.
"),
    ("edit-agent", "Usage: ced edit-agent <name> [--rename <new>] [--ip <addr>] [--agent-port <n>] [--lookup-by ip|hostname]
Changes a registry record. Exit: 0, 1 unknown agent, 64 usage.
"),
    ("unpair", "Usage: ced unpair <hostname> [--revoke]
Removes an agent from the registry; --revoke also refuses its certificate
and key from now on. Exit: 0, 1 unknown agent.
"),
    ("list-locks", "Usage: ced list-locks [--json]\nLists host:script locks held now.\n"),
    ("revoke-dispatcher", "Usage: ced revoke-dispatcher <serial> [--json]
Pushes a dispatcher serial to every agent's revocation list.
Exit: 0 every agent took it, 1 otherwise, 64 usage (or our own serial).
"),
    ("rotate-cert", "Usage: ced rotate-cert [--json]
Replaces the dispatcher's certificate now: announces the new serial to every
agent with the old, still-trusted certificate, then installs the new pair;
the old serial stays trusted for cert_overlap_days.
Exit: 0 every agent took it, 75 some agents were not reached (retried by
maintain), 1 failure, 64 usage.
"),
    ("serial-status", "Usage: ced serial-status [--json]
Shows the dispatcher's certificate (serial, expiry, a rotation in progress)
and, per agent, whether it trusts the current serial. Exit: 0, 1.
"),
    ("maintain", "Usage: ced maintain [--json]
The timer job (every 4 h): renews agent certificates past half their life,
rotates the dispatcher's when cert_renewal_days are left, retires the old
serial after the overlap, purges old run records.
Exit: 0 all done, 75 something is left for the next run, 1 failure.
"),
    ("check-config", "Usage: ced check-config\nChecks ctrl-exec.conf and the certificates it names. Exit: 0, 78 errors.\n"),
];

/// The help text of `mode`, if it is one.
pub(super) fn of(mode: &str) -> Option<&'static str> {
    MODES.iter().find(|(m, _)| *m == mode).map(|(_, h)| *h)
}
