//! `cea <mode> --help`: each mode's own flags and exit codes.

/// (mode, help text).
const MODES: &[(&str, &str)] = &[
    ("serve", "Usage: cea serve [--config <path>] [--allowlist <path>]
Runs the agent: the mTLS listener on `port` (default 7443). SIGHUP reloads
the allowlist, agent.conf, trust files and certificates; SIGTERM stops.
Exit: 0 stopped, 1 failure, 78 configuration unusable or not paired.
"),
    ("request-pairing", "Usage: cea request-pairing --dispatcher <host> [--port <n>] [--lookup-by ip|hostname]
                           [--ca-fingerprint sha256:<hex>] [--key-type ec|rsa|rsa3072|rsa4096]
                           [--background [--timeout <s>]]
Makes a key and CSR and asks the dispatcher (pairing port, default 7444) to
sign it; compare the 6-digit code shown on both hosts before approving.
Exit: 0 paired, 1 refused or failed, 2 no decision before --timeout,
3 denied, 64 usage.
"),
    ("pairing-status", "Usage: cea pairing-status\nShows whether this agent is paired. Exit: 0 paired, 1 not.\n"),
    ("self-check", "Usage: cea self-check [--config <path>] [--allowlist <path>]
Checks config, allowlist, certificates and trust-file ownership offline.
Exit: 0 no errors, 1 errors (unknown config keys, expired certificate,
trust files a script could replace).
"),
    ("self-ping", "Usage: cea self-ping\nConnects to the local agent over mTLS. Exit: 0 answered, 1 not.\n"),
    ("promote-cert", "Usage: cea promote-cert\nMakes a valid staged certificate the live one and writes valid staged\ntrusted-map changes into the map; run as root before serve. Never fails\na start (exit 0).\n"),
    ("cert-staged", "Usage: cea cert-staged\nExit 0 when a renewed certificate is staged, 1 otherwise.\n"),
    ("check-start", "Usage: cea check-start [--config <path>] [--allowlist <path>] [--user <name>]
Loads everything `serve` loads at start (agent.conf, allowlist, certificates,
trust files, profiles) without listening; with --user, also checks that that
user can read them and write the state dirs, naming each file and its fix.
Init scripts run it as root before starting the service, so an agent that
would exit 78 is never started or respawned.
Exit: 0 serve would start, 78 it would not (the reason on stderr), 64 usage.
"),
    ("paired", "Usage: cea paired\nExit 0 when this agent is paired, 1 otherwise.\n"),
];

/// The help text of `mode`, if it is one.
pub(super) fn of(mode: &str) -> Option<&'static str> {
    MODES.iter().find(|(m, _)| *m == mode).map(|(_, h)| *h)
}
