#!/usr/bin/env bash
# Certificate upkeep at fleet scale, on loopback: N agents (default 100), each
# paired through the real flow (request-pairing --background, approve) and
# served by its own `cea serve`, then timed:
#
#   renewal round trip   `ced ping <one agent>` that renews its certificate
#                        (ping + /renew + sign + /renew-complete) against one
#                        that does not
#   maintain, renewing   the first `ced maintain`: pings every agent and renews
#                        every certificate still past half-life
#   maintain, steady     `ced maintain` with nothing due (ping N, checks)
#   rotate-cert          new dispatcher certificate announced to N agents
#   maintain, retiring   `ced maintain` right after a rotation with
#                        cert_overlap_days = 0: removes the old serial from N
#
# Usage: scripts/bench-maintain.sh [BINARY]   (default: the release binary,
#        else target/debug/ctrl-exec). N=100 RUNS=5 by default.
# Runs as a normal user in a temporary directory; stops everything it started.
set -euo pipefail

N=${N:-100}
RUNS=${RUNS:-5}
BIN=${1:-}
if [ -z "$BIN" ]; then
    for b in target/x86_64-unknown-linux-musl/release/ctrl-exec target/release/ctrl-exec target/debug/ctrl-exec; do
        if [ -x "$b" ]; then BIN=$b; break; fi
    done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "no ctrl-exec binary; run 'make static' or pass one" >&2; exit 1; }
BIN=$(realpath "$BIN")
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
bench_root maintain "$BIN"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# median of the numbers on stdin
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
# timed CMD...: runs CMD (any exit code), prints its wall time in ms
timed() { local t0; t0=$(now_ms); "$@" >"$ROOT/logs/last.out" 2>&1 || true; echo $(( $(now_ms) - t0 )); }

# Agent certificates of one day: past half of the 365 days set afterwards.
bench_dispatcher "pairing_max_queue = 16
cert_days = 1"

echo "Pairing and serving $N agents ($BIN)..."
t0=$(now_ms)
for i in $(seq "$N"); do
    name=a$i
    A="$ROOT/$name"
    mkdir -p "$A"
    { agent_conf "$A" "$name"; echo "rate_limit_disable = 1"; } >"$A/agent.conf"
    : >"$A/scripts.conf"
    bench_pair "$A"
    wait_for "$A/ctrl-exec-dispatchers" 'bench-dispatcher' 30 >/dev/null
    cea --config "$A/agent.conf" --allowlist "$A/scripts.conf" serve >"$A/serve.out" 2>"$A/agent.log" &
    PIDS+=($!)
    PORT=$(wait_for "$A/serve.out" 'listening on [0-9.]+:[0-9]+' 30 | grep -oE '[0-9]+$')
    ced --config "$DCONF" edit-agent "$name" --agent-port "$PORT" >/dev/null
done
ced --config "$DCONF" pairing-mode stop >/dev/null
echo "  paired and serving in $(( $(now_ms) - t0 )) ms"
printf 'cert_days = 365\ncert_overlap_days = 0\n' >>"$DCONF"

report() { printf '%-34s median %6s ms   runs: %s\n' "$1" "$(printf '%s\n' $2 | median)" "$(echo $2)"; }

RENEW=() PLAIN=()
for i in $(seq "$RUNS"); do
    RENEW+=("$(timed ced --config "$DCONF" ping "a$i")")
    grep -q 'certificate renewed' "$ROOT/logs/last.out" || { echo "a$i was not renewed:"; cat "$ROOT/logs/last.out"; exit 1; }
    PLAIN+=("$(timed ced --config "$DCONF" ping "a$i")")
done
report "ced ping 1 agent, renewing" "${RENEW[*]}"
report "ced ping 1 agent, not renewing" "${PLAIN[*]}"

FIRST=$(timed ced --config "$DCONF" maintain)
grep -q "Maintenance run: $N/$N agents pinged" "$ROOT/logs/last.out" || { cat "$ROOT/logs/last.out"; exit 1; }
RENEWED=$(grep -c 'certificate renewed' "$ROOT/logs/last.out" || true)
report "ced maintain, $RENEWED renewals" "$FIRST"

STEADY=()
for i in $(seq "$RUNS"); do STEADY+=("$(timed ced --config "$DCONF" maintain)"); done
grep -q "Maintenance run: $N/$N agents pinged" "$ROOT/logs/last.out" || { cat "$ROOT/logs/last.out"; exit 1; }
report "ced maintain, $N agents, none due" "${STEADY[*]}"

ROT=() RET=()
for i in $(seq "$RUNS"); do
    ROT+=("$(timed ced --config "$DCONF" rotate-cert)")
    grep -q "Updated: $N" "$ROOT/logs/last.out" || { cat "$ROOT/logs/last.out"; exit 1; }
    RET+=("$(timed ced --config "$DCONF" maintain)")
    grep -q "Retired the previous serial" "$ROOT/logs/last.out" || { cat "$ROOT/logs/last.out"; exit 1; }
done
report "ced rotate-cert, $N agents" "${ROT[*]}"
report "ced maintain, retiring on $N" "${RET[*]}"
