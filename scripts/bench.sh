#!/usr/bin/env bash
# Measures, in one run on this machine: the binary size, an idle agent's RSS,
# `ced run` wall time on loopback, and API latency for /health and a one-host
# /run. Builds the demo deployment first (scripts/demo.sh) and stops it after.
set -euo pipefail
BIN=$(realpath "${1:-target/x86_64-unknown-linux-musl/release/ctrl-exec}")
N=${N:-50}
ROOT="$PWD/demo-deployment"

KEEP_RUNNING=1 bash scripts/demo.sh "$BIN" >/dev/null 2>&1
# shellcheck disable=SC1091
. "$ROOT/env"
export PATH="$ROOT/bin:$PATH" ENVEXEC_TOKEN=demo-token
trap 'kill $AGENT_PIDS 2>/dev/null || true' EXIT

now_ns() { date +%s%N; }
# time_loop LABEL CMD...: runs CMD N times, prints mean and min in ms.
time_loop() {
    local label=$1; shift
    local i t0 t1 total=0 min=
    for i in $(seq "$N"); do
        t0=$(now_ns); "$@" >/dev/null 2>&1; t1=$(now_ns)
        d=$(( (t1 - t0) / 1000 )); total=$((total + d))
        if [ -z "$min" ] || [ "$d" -lt "$min" ]; then min=$d; fi
    done
    awk -v l="$label" -v t="$total" -v m="$min" -v n="$N" \
        'BEGIN { printf "%-34s mean %7.2f ms   min %7.2f ms   (n=%d)\n", l, t / n / 1000, m / 1000, n }'
}
http() { # METHOD PATH [BODY] over bash /dev/tcp
    local body=${3:-}
    exec 3<>"/dev/tcp/${API%:*}/${API#*:}"
    printf '%s %s HTTP/1.0\r\nAuthorization: Bearer demo-token\r\nContent-Length: %d\r\n\r\n%s' "$1" "$2" "${#body}" "$body" >&3
    cat <&3 >/dev/null; exec 3<&-
}

echo "binary: $BIN"
awk -v s="$(stat -c %s "$BIN")" 'BEGIN { printf "%-34s %d bytes (%.2f MiB)\n", "static binary size", s, s / 1048576 }'
AGENT_PID=${AGENT_PIDS%% *}
printf '%-34s %s\n' "idle agent RSS (after demo runs)" "$(grep VmRSS "/proc/$AGENT_PID/status" | awk '{print $2 " " $3}')"
printf '%-34s %s\n' "agent peak RSS (VmHWM)" "$(grep VmHWM "/proc/$AGENT_PID/status" | awk '{print $2 " " $3}')"
time_loop "ced run web1 hello (one host)" ced --config "$DCONF" run web1 hello
time_loop "ced run web1 db1 hello (two)" ced --config "$DCONF" run web1 db1 hello
time_loop "ced ping web1" ced --config "$DCONF" ping web1
time_loop "API GET /health" http GET /health
time_loop "API POST /run (one host)" http POST /run '{"hosts":["web1"],"script":"hello"}'
if command -v wrk >/dev/null; then
    echo "wrk -t1 -c4 -d5s http://$API/health"
    wrk -t1 -c4 -d5s "http://$API/health" | sed -n '3,4p;7p'
fi
printf '%-34s %s\n' "agent RSS after the loops" "$(grep VmRSS "/proc/$AGENT_PID/status" | awk '{print $2 " " $3}')"
bash scripts/bench-flood.sh "$BIN"
