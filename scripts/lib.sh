# Shell helpers shared by demo.sh and the benchmarks; source it.

# wait_for FILE PATTERN [SECONDS]: the first match of PATTERN in FILE,
# polled every 0.1 s for SECONDS (default 10).
wait_for() {
    local i line tries=$(( ${3:-10} * 10 ))
    for i in $(seq "$tries"); do
        line=$(grep -m1 -oE "$2" "$1" 2>/dev/null || true)
        [ -n "$line" ] && { echo "$line"; return 0; }
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

# agent_conf DIR NAME: the agent.conf keys every throwaway agent shares
# (ephemeral port on loopback, files under DIR), on stdout; callers append
# their own keys.
agent_conf() {
    cat <<CONF
port = 0
bind = 127.0.0.1
hostname = $2
cert = $1/agent.crt
key = $1/agent.key
ca = $1/ca.crt
state_dir = $1/state
revoked_serials = $1/revoked-serials
CONF
}

# dispatcher_conf DIR ID: the ctrl-exec.conf keys every throwaway dispatcher
# shares (CA, identity and state under DIR, pairing on loopback, id ID), on
# stdout; callers append their own keys.
dispatcher_conf() {
    cat <<CONF
cert = $1/ctrl-exec.crt
key = $1/ctrl-exec.key
ca = $1/ca.crt
ca_dir = $1
state_dir = $1/state
pairing_bind = 127.0.0.1
dispatcher_id = $2
CONF
}

# bench_root KIND BIN: a fresh temporary directory in ROOT with bin/ced and
# bin/cea linked to BIN and on PATH; PIDS collects what to kill, and an EXIT
# trap kills it, stops pairing mode and removes ROOT.
bench_root() {
    ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ce-bench-$1.XXXXXX")
    mkdir -p "$ROOT/bin" "$ROOT/d" "$ROOT/logs"
    local r
    for r in ced cea; do ln -s "$(realpath "$2")" "$ROOT/bin/$r"; done
    export PATH="$ROOT/bin:$PATH"
    PIDS=()
    DCONF="$ROOT/d/ctrl-exec.conf"
    trap bench_cleanup EXIT
}
bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ced --config "$DCONF" pairing-mode stop >/dev/null 2>&1 || true
    rm -rf "$ROOT"
}

# bench_dispatcher EXTRA: a throwaway dispatcher in $ROOT/d (config plus the
# EXTRA lines, CA, certificate) with pairing mode running; sets FP (the CA
# fingerprint) and PAIR_PORT.
bench_dispatcher() {
    { dispatcher_conf "$ROOT/d" bench-dispatcher; printf 'pairing_rate_limit_disable = 1\n%s\n' "$1"; } >"$DCONF"
    ced --config "$DCONF" setup-ca >"$ROOT/logs/setup-ca.out"
    ced --config "$DCONF" setup-ctrl-exec >/dev/null
    FP=$(grep -m1 -oE 'sha256:[0-9a-f]{64}' "$ROOT/logs/setup-ca.out")
    ced --config "$DCONF" pairing-mode start --port 0 --timeout 600 >"$ROOT/logs/pairing.out"
    PAIR_PORT=$(grep -oE 'on port [0-9]+' "$ROOT/logs/pairing.out" | grep -oE '[0-9]+')
}

# bench_pair DIR: the real pairing of the agent whose agent.conf is in DIR
# (background request, then approve); returns once approved. The agents are
# addressed by IP: their names (a1, a2, ...) exist nowhere, and letting
# approve find that out costs a DNS query each (about 50 ms here).
bench_pair() {
    local req
    req=$(cea --config "$1/agent.conf" request-pairing --dispatcher 127.0.0.1 --port "$PAIR_PORT" \
        --ca-fingerprint "$FP" --background --timeout 120 2>>"$ROOT/logs/pairing.log")
    ced --config "$DCONF" approve --lookup-by ip "$req" >/dev/null
}
