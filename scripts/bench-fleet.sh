#!/usr/bin/env bash
# Fleet-scale figures on loopback, in one run: N agents (default 100; make
# bench N=1000), each paired through the real flow (request-pairing
# --background, then ced approve) and served by its own `cea serve`, with one
# allowlisted script, /bin/true. Printed one line per figure (name, value,
# unit, median and p95 of the repeats) and written to $OUT (default
# target/bench/fleet.json):
#
#   pairing            time to pair all N agents (request + approve each)
#   run_all            `ced run` of /bin/true on all N, RUNS times (default 5);
#                      every result must be OK, else the bench fails
#   run_all_rss        the dispatcher's peak RSS during one of those runs
#   run_one, ping_one  one host, REPEAT times (default 50), process start included
#   agent_runs_per_s_ced  one agent, 16 concurrent `ced run` loops (each its
#                      own script name, as ced locks host:script), AGENT_RUNS
#                      in all (default 4000): a process per run, so mostly ced
#   agent_runs_per_s   the same agent, LOAD_RUNS runs (default 20000), from 16 concurrent mTLS
#                      clients in one long-lived process (examples/agent_load.rs:
#                      one Engine, TLS sessions resumed; built here with cargo)
#   agent_idle_rss, agent_rss_growth  that agent before, and its growth after both
#   api_health_rps     ctrl-exec-api GET /health requests/s (wrk, 16 connections,
#                      three 5 s runs: median and p95 of the runs)
#   api_run_one        POST /run of /bin/true on one agent through the API (wrk,
#                      one connection): median of the runs' medians, and of their p95
#
#   bash scripts/bench-fleet.sh [BINARY]
#
# DISPATCHER_CONF adds lines to the dispatcher's config (to compare settings,
# e.g. DISPATCHER_CONF='max_parallel = 256').
#
# Runs in a temporary directory and stops everything it started.
set -euo pipefail
N=${N:-100}
RUNS=${RUNS:-5}
REPEAT=${REPEAT:-50}
AGENT_RUNS=${AGENT_RUNS:-4000}
LOAD_RUNS=${LOAD_RUNS:-20000}
CLIENTS=16
OUT=${OUT:-target/bench/fleet.json}
BIN=$(realpath "${1:-target/x86_64-unknown-linux-musl/release/ctrl-exec}")
command -v python3 >/dev/null || { echo "bench-fleet needs python3 (peak RSS)" >&2; exit 1; }
# The load client of agent_runs_per_s, built before anything starts.
REPO=$(realpath "$(dirname "$0")/..")
(cd "$REPO" && cargo build --quiet --release --example agent_load)
LOAD=$(cd "$REPO" && realpath "${CARGO_TARGET_DIR:-target}/release/examples/agent_load")
# Every agent and the dispatcher's N connections need descriptors.
ulimit -n "$(( N * 4 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
bench_root fleet "$BIN"
mkdir -p "$(dirname "$OUT")"
now_us() { echo $(( $(date +%s%N) / 1000 )); }
# stats: samples on stdin (one a line) -> "median p95"
stats() { sort -n | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    i = int(NR * 0.95 + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; printf "%g %g\n", m, v[i] }'; }
FIGURES=()
# figure NAME VALUE UNIT MEDIAN P95: prints the line and keeps it for the JSON.
figure() {
    printf '%-22s %12s %-6s median %10s  p95 %10s\n' "$1" "$2" "$3" "$4" "$5"
    FIGURES+=("{\"name\":\"$1\",\"value\":$2,\"unit\":\"$3\",\"median\":$4,\"p95\":$5}")
}

bench_dispatcher "max_hosts = $(( N > 10000 ? N : 10000 ))
api_bind = 127.0.0.1
api_port = 0
api_auth_default = allow
${DISPATCHER_CONF:-}"

echo "binary: $BIN"
echo "fleet: $N agents on 127.0.0.1"
t0=$(now_us)
for i in $(seq "$N"); do
    A="$ROOT/a$i"
    mkdir -p "$A"
    { agent_conf "$A" "a$i"; printf 'rate_limit_disable = 1\nscript_dirs = /bin\n'; } >"$A/agent.conf"
    # `true`, and t1..t16 for the concurrent clients: ced locks host:script.
    { echo "true = /bin/true"; for c in $(seq "$CLIENTS"); do echo "t$c = /bin/true"; done; } >"$A/scripts.conf"
    bench_pair "$A"
done
for i in $(seq "$N"); do wait_for "$ROOT/a$i/ctrl-exec-dispatchers" 'bench-dispatcher' 60 >/dev/null; done
PAIRED_S=$(awk -v t="$(( $(now_us) - t0 ))" 'BEGIN { printf "%.2f", t / 1e6 }')
figure pairing "$PAIRED_S" s "$PAIRED_S" "$PAIRED_S"
ced --config "$DCONF" pairing-mode stop >/dev/null

for i in $(seq "$N"); do
    A="$ROOT/a$i"
    cea --config "$A/agent.conf" --allowlist "$A/scripts.conf" serve >"$A/serve.out" 2>"$A/agent.log" &
    PIDS+=($!)
done
: >"$ROOT/hosts"
for i in $(seq "$N"); do
    PORT=$(wait_for "$ROOT/a$i/serve.out" 'listening on [0-9.]+:[0-9]+' 30 | grep -oE '[0-9]+$')
    ced --config "$DCONF" edit-agent "a$i" --agent-port "$PORT" >/dev/null
    echo "a$i" >>"$ROOT/hosts"
done

# Peak RSS of a child, in KiB (ru_maxrss), with its exit code checked.
peak_rss() {
    python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)' "$@"
}
samples=$(mktemp)
for r in $(seq "$RUNS"); do
    t=$(now_us)
    ced --config "$DCONF" run --hosts-file "$ROOT/hosts" true >"$ROOT/logs/run_all.out" 2>&1 || true
    echo $(( $(now_us) - t )) >>"$samples"
    ok=$(grep -c '\[OK ' "$ROOT/logs/run_all.out" || true)
    [ "$ok" = "$N" ] || { echo "run_all: $ok of $N OK" >&2; grep -v '\[OK ' "$ROOT/logs/run_all.out" | head >&2; exit 1; }
done
read -r med p95 < <(awk '{ print $1 / 1000 }' "$samples" | stats)
figure run_all "$med" ms "$med" "$p95"
RSS=$(peak_rss ced --config "$DCONF" run --hosts-file "$ROOT/hosts" true)
[ "$RSS" != -1 ] || { echo "run_all under the RSS probe failed" >&2; exit 1; }
figure run_all_rss "$(( RSS / 1024 ))" MiB "$(( RSS / 1024 ))" "$(( RSS / 1024 ))"

# loop NAME CMD...: CMD REPEAT times, one figure in ms. With hyperfine, its
# own timing (no shell or `date` forks in the figure); else the shell's.
loop() {
    local name=$1 i t; shift
    : >"$samples"
    if command -v hyperfine >/dev/null; then
        hyperfine -N -w 5 -r "$REPEAT" --export-json "$ROOT/logs/$name.json" "$*" >/dev/null 2>&1 ||
            { echo "$name failed: $*" >&2; exit 1; }
        python3 -c 'import json, sys
for t in json.load(open(sys.argv[1]))["results"][0]["times"]: print(round(t * 1e6))' \
            "$ROOT/logs/$name.json" >"$samples"
    else
        for i in $(seq "$REPEAT"); do
            t=$(now_us); "$@" >/dev/null 2>&1 || { echo "$name failed: $*" >&2; exit 1; }
            echo $(( $(now_us) - t )) >>"$samples"
        done
    fi
    read -r med p95 < <(awk '{ print $1 / 1000 }' "$samples" | stats)
    figure "$name" "$med" ms "$med" "$p95"
}
loop run_one ced --config "$DCONF" run a1 true
loop ping_one ced --config "$DCONF" ping a1

AGENT=${PIDS[0]}
idle=$(awk '/VmRSS/ { print $2 }' "/proc/$AGENT/status")
figure agent_idle_rss "$idle" KiB "$idle" "$idle"
per_client=$(( AGENT_RUNS / CLIENTS ))
t=$(now_us)
CLIENT_PIDS=()
for c in $(seq "$CLIENTS"); do
    ( for i in $(seq "$per_client"); do ced --config "$DCONF" run a1 "t$c" >/dev/null 2>&1 || echo x >>"$ROOT/logs/agent_fail"; done ) &
    CLIENT_PIDS+=($!)
done
for p in "${CLIENT_PIDS[@]}"; do wait "$p"; done
elapsed=$(( $(now_us) - t ))
fails=0
[ ! -f "$ROOT/logs/agent_fail" ] || fails=$(wc -l <"$ROOT/logs/agent_fail")
[ "$fails" = 0 ] || { echo "agent throughput: $fails runs failed" >&2; exit 1; }
rate=$(awk -v n="$(( per_client * CLIENTS ))" -v t="$elapsed" 'BEGIN { printf "%.0f", n / (t / 1e6) }')
figure agent_runs_per_s_ced "$rate" 1/s "$rate" "$rate"
mapfile -t scripts < <(seq -f 't%g' "$CLIENTS")
load=$("$LOAD" "$DCONF" a1 "$CLIENTS" "$LOAD_RUNS" "${scripts[@]}" 2>"$ROOT/logs/agent_load.err") ||
    { echo "agent_load failed: $load" >&2; cat "$ROOT/logs/agent_load.err" >&2; exit 1; }
rate=$(grep -oE 'runs_per_s=[0-9]+' <<<"$load" | cut -d= -f2)
figure agent_runs_per_s "$rate" 1/s "$rate" "$rate"
after=$(awk '/VmRSS/ { print $2 }' "/proc/$AGENT/status")
figure agent_rss_growth "$(( after - idle ))" KiB "$(( after - idle ))" "$(( after - idle ))"

# The API on loopback (no hook, api_auth_default = allow), measured with wrk.
if command -v wrk >/dev/null; then
    ln -sf "$BIN" "$ROOT/bin/ctrl-exec-api"
    ctrl-exec-api --config "$DCONF" >"$ROOT/logs/api.out" 2>"$ROOT/logs/api.log" &
    PIDS+=($!)
    API=$(wait_for "$ROOT/logs/api.out" 'listening on [0-9.]+:[0-9]+' 10 | grep -oE '[0-9.]+:[0-9]+$')
    body='{"hosts":["a1"],"script":"true"}'
    reply=$(python3 - "$API" "$body" <<'PY'
import sys, urllib.request
req = urllib.request.Request("http://%s/run" % sys.argv[1], data=sys.argv[2].encode(),
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=30).read().decode())
PY
)
    grep -q '"exit":0,' <<<"$reply" || { echo "API POST /run: $reply" >&2; exit 1; }
    # wrk_figure NAME UNIT WRK-ARGS...: three wrk runs; the lua script prints
    # "<requests/s> <median ms> <p95 ms> <bad>" (bad: non-2xx and socket errors).
    cat >"$ROOT/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  local bad = (summary.status or 0) + e.connect + e.read + e.write + e.timeout
  io.write(string.format("REPORT %.0f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, bad))
end
LUA
    printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n' "$body" >"$ROOT/post.lua"
    cat "$ROOT/report.lua" >>"$ROOT/post.lua"
    wrk_runs() { # LUA CONNECTIONS PATH: one REPORT line per run
        local i
        for i in 1 2 3; do
            wrk -t1 -c"$2" -d5s -s "$1" "http://$API$3" | grep '^REPORT' | cut -d' ' -f2-
        done
    }
    wrk_runs "$ROOT/report.lua" 16 /health >"$ROOT/logs/health.wrk"
    wrk_runs "$ROOT/post.lua" 1 /run >"$ROOT/logs/run.wrk"
    for f in health run; do
        [ "$(wc -l <"$ROOT/logs/$f.wrk")" = 3 ] || { echo "API: wrk did not report for $f" >&2; exit 1; }
    done
    bad=$(awk '{ b += $4 } END { print b + 0 }' "$ROOT/logs/health.wrk" "$ROOT/logs/run.wrk")
    [ "$bad" = 0 ] || { echo "API: $bad failed requests under wrk" >&2; exit 1; }
    read -r med p95 < <(awk '{ print $1 }' "$ROOT/logs/health.wrk" | stats)
    figure api_health_rps "$med" 1/s "$med" "$p95"
    read -r med _ < <(awk '{ print $2 }' "$ROOT/logs/run.wrk" | stats)
    read -r p95 _ < <(awk '{ print $3 }' "$ROOT/logs/run.wrk" | stats)
    figure api_run_one "$med" ms "$med" "$p95"
else
    echo "wrk not installed: no API figures (make deps-bench installs it)" >&2
fi
size=$(stat -c %s "$BIN")
figure binary_size "$size" bytes "$size" "$size"

{
    printf '{"binary":"%s","agents":%d,"figures":[' "$BIN" "$N"
    (IFS=,; printf '%s' "${FIGURES[*]}")
    printf ']}\n'
} >"$OUT"
echo "figures written to $OUT"
rm -f "$samples"
