#!/usr/bin/env bash
# A throwaway ctrl-exec deployment in ./demo-deployment: a CA, a dispatcher,
# two agents on 127.0.0.1 paired through the real pairing flow, real scripts
# run through `ced` and through the HTTP API. Runs as a normal user; every
# process it starts is stopped on exit.
set -euo pipefail

BIN=$(realpath "${1:-target/debug/ctrl-exec}")
ROOT="$PWD/demo-deployment"
rm -rf "$ROOT"
mkdir -p "$ROOT/bin" "$ROOT/dispatcher" "$ROOT/scripts" "$ROOT/logs"
for r in ced cea ctrl-exec-api ctrl-exec-exec; do ln -s "$BIN" "$ROOT/bin/$r"; done
export PATH="$ROOT/bin:$PATH"
PIDS=()
cleanup() {
    # KEEP_RUNNING=1 (used by scripts/bench.sh) leaves the agents and the API up.
    [ "${KEEP_RUNNING:-0}" = 1 ] && return 0
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ced --config "$DCONF" pairing-mode stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$(printf "%q " "$@")"; "$@" || echo "(exit $?)"; }
. "$(dirname "$0")/lib.sh"

# --- dispatcher -------------------------------------------------------------
DCONF="$ROOT/dispatcher/ctrl-exec.conf"
cat > "$ROOT/demo-hook" <<'HOOK'
#!/bin/sh
# Demo auth hook: the CLI and API must present the demo token.
[ "$ENVEXEC_TOKEN" = "demo-token" ] && exit 0
exit 2
HOOK
chmod +x "$ROOT/demo-hook"
{ dispatcher_conf "$ROOT/dispatcher" demo-dispatcher; cat <<CONF; } > "$DCONF"
api_bind = 127.0.0.1
api_port = 0
auth_hook = $ROOT/demo-hook
CONF
export ENVEXEC_TOKEN=demo-token

say "ced --config $DCONF setup-ca"
ced --config "$DCONF" setup-ca | tee "$ROOT/logs/setup-ca.out"
run ced --config "$DCONF" setup-ctrl-exec
FP=$(grep -m1 -oE 'sha256:[0-9a-f]{64}' "$ROOT/logs/setup-ca.out")
say "ced --config $DCONF pairing-mode start --port 0 --timeout 300"
ced --config "$DCONF" pairing-mode start --port 0 --timeout 300 | tee "$ROOT/logs/pairing.out"
PAIR_PORT=$(grep -oE 'on port [0-9]+' "$ROOT/logs/pairing.out" | grep -oE '[0-9]+')

# --- scripts the agents may run ---------------------------------------------
cat > "$ROOT/scripts/hello.sh" <<'S'
#!/bin/sh
echo "hello from $(hostname) as $(id -un)"
i=0; for a in "$@"; do i=$((i+1)); printf 'arg %d: [%s]\n' "$i" "$a"; done
S
cat > "$ROOT/scripts/fail.sh" <<'S'
#!/bin/sh
echo "checking something..."; echo "disk almost full" >&2; exit 3
S
cat > "$ROOT/scripts/slow.sh" <<'S'
#!/bin/sh
sleep 1; echo "slow job finished"
S
chmod +x "$ROOT"/scripts/*.sh

# --- two agents, paired for real ---------------------------------------------
for name in web1 db1; do
    A="$ROOT/$name"
    mkdir -p "$A"
    { agent_conf "$A" "$name"; cat <<CONF; } > "$A/agent.conf"
script_dirs = $ROOT/scripts
script_timeout = 30

[tags]
role = $name
CONF
    cat > "$A/scripts.conf" <<CONF
hello = $ROOT/scripts/hello.sh
fail = $ROOT/scripts/fail.sh
slow = $ROOT/scripts/slow.sh timeout=10
CONF
    say "cea --config $A/agent.conf request-pairing --dispatcher 127.0.0.1 --port $PAIR_PORT --ca-fingerprint $FP --background"
    REQ=$(cea --config "$A/agent.conf" request-pairing --dispatcher 127.0.0.1 --port "$PAIR_PORT" --ca-fingerprint "$FP" --background --timeout 60)
    echo "$REQ"
    run ced --config "$DCONF" list-requests
    run ced --config "$DCONF" approve "$REQ"
    wait_for "$A/ctrl-exec-dispatchers" 'demo-dispatcher' >/dev/null
    cea --config "$A/agent.conf" --allowlist "$A/scripts.conf" serve >"$A/serve.out" 2>"$ROOT/logs/$name.log" &
    PIDS+=($!)
    PORT=$(wait_for "$A/serve.out" 'listening on [0-9.]+:[0-9]+' | grep -oE '[0-9]+$')
    run ced --config "$DCONF" edit-agent "$name" --agent-port "$PORT"
done
ced --config "$DCONF" pairing-mode stop >/dev/null

# --- using it ----------------------------------------------------------------
run ced --config "$DCONF" list-agents
run ced --config "$DCONF" ping web1 db1
run ced --config "$DCONF" run web1 db1 hello -- "an argument with spaces" 'single '"'"'quotes'"'"' and "double"' '$(id)' ''
run ced --config "$DCONF" run web1 fail
run ced --config "$DCONF" run web1 not-allowed
run ced --config "$DCONF" --token wrong run web1 hello
say "ced --config $DCONF run db1 slow --async"
SUBMITTED=$(ced --config "$DCONF" run db1 slow --async)
echo "$SUBMITTED"
ASYNC=$(echo "$SUBMITTED" | grep -m1 -oE 'req:[0-9a-f]+' | cut -d: -f2)
run ced --config "$DCONF" wait "$ASYNC" --timeout 20

# --- the HTTP API --------------------------------------------------------------
ctrl-exec-api --config "$DCONF" >"$ROOT/logs/api.out" 2>"$ROOT/logs/api.log" &
PIDS+=($!)
API=$(wait_for "$ROOT/logs/api.out" '127\.0\.0\.1:[0-9]+')
http() { # METHOD PATH [BODY]: a plain HTTP/1.0 request over bash's /dev/tcp
    local body=${3:-}
    exec 3<>"/dev/tcp/${API%:*}/${API#*:}"
    printf '%s %s HTTP/1.0\r\nAuthorization: Bearer demo-token\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
        "$1" "$2" "${#body}" "$body" >&3
    cat <&3; echo; exec 3<&-
}
say "GET http://$API/health";    http GET /health
say "POST http://$API/run";      http POST /run '{"hosts":["web1","db1"],"script":"hello","args":["via the API"]}'
say "GET http://$API/discovery"; DISCOVERY=$(http GET /discovery); echo "${DISCOVERY:0:600} ..."
cat > "$ROOT/env" <<ENV
DCONF=$DCONF
API=$API
AGENT_PIDS="${PIDS[*]}"
ENV
echo
echo "Demo deployment left in $ROOT (logs in $ROOT/logs); all demo processes stopped."
