#!/usr/bin/env bash
# Measures, in one run on this machine: the binary size, an idle agent's RSS,
# `ced run` wall time on loopback, and API latency for /health and a one-host
# /run. Builds the demo deployment first (scripts/demo.sh) and stops it after.
# Every timed loop runs REPEAT times (50 unless set) and prints mean, median
# and min. Then the fleet figures (scripts/bench-fleet.sh, N agents, default
# 100) and the executor against the direct path.
#
# BASELINE=/path/to/other/ctrl-exec (optional) compares against another build
# in the same run: the deployment is still built with the binary under test,
# and the baseline binary is used as the `ced` client for the `ced run` and
# `ced ping` loops, alternating baseline and new run by run so machine noise
# hits both alike. Those lines, and the binary size, then show both values and
# the ratio new/baseline. The API loops measure the deployment (new) only.
set -euo pipefail
BIN=$(realpath "${1:-target/x86_64-unknown-linux-musl/release/ctrl-exec}")
REPEAT=${REPEAT:-50}
ROOT="$PWD/demo-deployment"
BASE=
if [ -n "${BASELINE:-}" ]; then
    BASE=$(realpath "$BASELINE")
    [ -x "$BASE" ] || { echo "BASELINE $BASE is not an executable" >&2; exit 1; }
fi

KEEP_RUNNING=1 bash scripts/demo.sh "$BIN" >/dev/null 2>&1
# shellcheck disable=SC1091
. "$ROOT/env"
export PATH="$ROOT/bin:$PATH" ENVEXEC_TOKEN=demo-token
FAILS=$(mktemp) FAILS_B=$(mktemp)
trap 'kill ${AGENT_PIDS:-} 2>/dev/null || true; rm -f "$FAILS" "$FAILS_B"' EXIT
if [ -n "$BASE" ]; then
    # The role comes from argv[0], so the baseline gets its own `ced` link.
    mkdir -p "$ROOT/bin-base"
    ln -sf "$BASE" "$ROOT/bin-base/ced"
fi

now_ns() { date +%s%N; }
# stats: microsecond samples on stdin, one a line -> "mean median min" in ms.
stats() {
    sort -n | awk '{ v[NR] = $1; t += $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.3f %.3f %.3f\n", t / NR / 1000, m / 1000, v[1] / 1000 }'
}
# sample CMD...: runs CMD once, prints its wall time in microseconds; a
# non-zero exit adds a line to $FAILS.
sample() {
    local t0 t1 rc=0
    t0=$(now_ns); "$@" >/dev/null 2>&1 || rc=$?; t1=$(now_ns)
    [ "$rc" = 0 ] || echo "$rc" >>"$FAILS"
    echo $(( (t1 - t0) / 1000 ))
}
failed() { # FILE: " (K failed)" when any run in FILE failed, and resets it
    local k; k=$(wc -l <"$1"); : >"$1"
    [ "$k" = 0 ] || printf ' (%d failed)' "$k"
}
# time_loop LABEL CMD...: runs CMD N times, prints mean, median and min in ms.
time_loop() {
    local label=$1; shift
    local i mean med min
    read -r mean med min < <(for i in $(seq "$REPEAT"); do sample "$@"; done | stats)
    printf '%-34s mean %7.2f ms   median %7.2f ms   min %7.2f ms   (n=%d)%s\n' \
        "$label" "$mean" "$med" "$min" "$REPEAT" "$(failed "$FAILS")"
}
# time_ced LABEL ARGS...: `ced ARGS` N times; with a baseline, the new and the
# baseline client alternate (in turn first), and both medians and the ratio
# new/baseline are printed.
time_ced() {
    local label=$1; shift
    [ -n "$BASE" ] || { time_loop "$label" "$ROOT/bin/ced" "$@"; return; }
    local i sa sb a_mean a_med a_min b_mean b_med b_min
    sa=$(mktemp); sb=$(mktemp)
    for i in $(seq "$REPEAT"); do
        if [ $((i % 2)) = 1 ]; then
            sample "$ROOT/bin/ced" "$@" >>"$sa"
            FAILS=$FAILS_B sample "$ROOT/bin-base/ced" "$@" >>"$sb"
        else
            FAILS=$FAILS_B sample "$ROOT/bin-base/ced" "$@" >>"$sb"
            sample "$ROOT/bin/ced" "$@" >>"$sa"
        fi
    done
    read -r a_mean a_med a_min < <(stats <"$sa")
    read -r b_mean b_med b_min < <(stats <"$sb")
    printf '%-34s median new %7.2f ms  base %7.2f ms  new/base %5.3f   mean %.2f/%.2f  min %.2f/%.2f  (n=%d)%s%s\n' \
        "$label" "$a_med" "$b_med" "$(awk -v x="$a_med" -v y="$b_med" 'BEGIN { print x / y }')" \
        "$a_mean" "$b_mean" "$a_min" "$b_min" "$REPEAT" "$(failed "$FAILS")" "$(failed "$FAILS_B" | sed 's/failed/baseline failed/')"
    rm -f "$sa" "$sb"
}
http() { # METHOD PATH [BODY] over bash /dev/tcp
    local body=${3:-}
    exec 3<>"/dev/tcp/${API%:*}/${API#*:}"
    printf '%s %s HTTP/1.0\r\nAuthorization: Bearer demo-token\r\nContent-Length: %d\r\n\r\n%s' "$1" "$2" "${#body}" "$body" >&3
    cat <&3 >/dev/null; exec 3<&-
}

echo "binary: $BIN"
[ -z "$BASE" ] || echo "baseline: $BASE (ced client only; deployment runs the new binary)"
size() { awk -v s="$(stat -c %s "$1")" 'BEGIN { printf "%d bytes (%.2f MiB)", s, s / 1048576 }'; }
if [ -z "$BASE" ]; then
    printf '%-34s %s\n' "static binary size" "$(size "$BIN")"
else
    printf '%-34s new %s  base %s  new/base %5.3f\n' "static binary size" "$(size "$BIN")" "$(size "$BASE")" \
        "$(awk -v x="$(stat -c %s "$BIN")" -v y="$(stat -c %s "$BASE")" 'BEGIN { print x / y }')"
fi
AGENT_PID=${AGENT_PIDS%% *}
printf '%-34s %s\n' "idle agent RSS (after demo runs)" "$(grep VmRSS "/proc/$AGENT_PID/status" | awk '{print $2 " " $3}')"
printf '%-34s %s\n' "agent peak RSS (VmHWM)" "$(grep VmHWM "/proc/$AGENT_PID/status" | awk '{print $2 " " $3}')"
time_ced "ced run web1 hello (one host)" --config "$DCONF" run web1 hello
time_ced "ced run web1 db1 hello (two)" --config "$DCONF" run web1 db1 hello
time_ced "ced ping web1" --config "$DCONF" ping web1
time_loop "API GET /health" http GET /health
time_loop "API POST /run (one host)" http POST /run '{"hosts":["web1"],"script":"hello"}'
if command -v wrk >/dev/null; then
    echo "wrk -t1 -c4 -d5s http://$API/health"
    wrk -t1 -c4 -d5s "http://$API/health" | sed -n '3,4p;7p'
fi
printf '%-34s %s\n' "agent RSS after the loops" "$(grep VmRSS "/proc/$AGENT_PID/status" | awk '{print $2 " " $3}')"
bash scripts/bench-flood.sh "$BIN"
bash scripts/bench-memory.sh
N=$REPEAT bash scripts/bench-executor.sh
kill ${AGENT_PIDS:-} 2>/dev/null || true
N=${N:-100} bash scripts/bench-fleet.sh "$BIN"
