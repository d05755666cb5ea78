#!/usr/bin/env bash
# Per-run cost of the privileged executor against the direct path, against
# the demo deployment (scripts/demo.sh, left running by scripts/bench.sh).
#
# A second agent process serves web1's certificate on its own port with
# executor_socket set (and [profile default], run_as root: no user change, so
# only the executor's own work is measured: the unix socket exchange, the
# re-read of agent.conf and scripts.conf, the mount namespace with its
# read-only binds, the capability and no_new_privs set-up). `ced run web1`
# (direct) and `ced run web1:<port>` (through the executor) alternate run by
# run, N times (default 50), so machine noise hits both alike.
#
#   BIN=target/x86_64-unknown-linux-musl/release/ctrl-exec bash scripts/bench-executor.sh
#
# Needs root (the executor creates mount namespaces); skipped otherwise.
set -euo pipefail
N=${N:-50}
ROOT="$PWD/demo-deployment"
[ -f "$ROOT/env" ] || { echo "no demo deployment in $ROOT: run scripts/bench.sh" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "executor vs direct: skipped (needs root to create mount namespaces)"
    exit 0
fi
# shellcheck disable=SC1091
. "$ROOT/env"
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
export PATH="$ROOT/bin:$PATH" ENVEXEC_TOKEN=${ENVEXEC_TOKEN:-demo-token}
A="$ROOT/web1"
X="$ROOT/web1-exec"
rm -rf "$X"; mkdir -p "$X/state"
{
    sed -e "s#^state_dir = .*#state_dir = $X/state#" -e '/^\[tags\]/,$d' "$A/agent.conf"
    printf 'trusted_dispatchers_path = %s\nexecutor_socket = %s\n\n[profile default]\nrun_as = root\n' \
        "$A/ctrl-exec-dispatchers" "$X/exec.sock"
} >"$X/agent.conf"
ctrl-exec-exec serve "$X/exec.sock" "$X/agent.conf" "$A/scripts.conf" root >"$X/exec.out" 2>"$X/exec.log" &
EXEC_PID=$!
cea --config "$X/agent.conf" --allowlist "$A/scripts.conf" serve >"$X/serve.out" 2>"$X/agent.log" &
XAGENT_PID=$!
trap 'kill $EXEC_PID $XAGENT_PID 2>/dev/null || true' EXIT
wait_for "$X/exec.out" 'listening on' >/dev/null
XPORT=$(wait_for "$X/serve.out" 'listening on [0-9.]+:[0-9]+' | grep -oE '[0-9]+$')
ced --config "$DCONF" run "web1:$XPORT" hello | grep -q 'hello from' ||
    { echo "executor path does not run hello" >&2; cat "$X/exec.log" "$X/agent.log" >&2; exit 1; }

us() { # CMD...: wall time of one run in microseconds; exits on failure
    local t0 t1
    t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) / 1000 }'; }
p95() { sort -n | awk '{ v[NR] = $1 } END { i = int(NR * 0.95); if (i < 1) i = 1; print v[i] / 1000 }'; }
direct=$(mktemp) viaexec=$(mktemp)
for i in $(seq "$N"); do
    if [ $((i % 2)) = 1 ]; then
        us ced --config "$DCONF" run web1 hello >>"$direct"
        us ced --config "$DCONF" run "web1:$XPORT" hello >>"$viaexec"
    else
        us ced --config "$DCONF" run "web1:$XPORT" hello >>"$viaexec"
        us ced --config "$DCONF" run web1 hello >>"$direct"
    fi
done
d=$(median <"$direct") e=$(median <"$viaexec")
printf '%-34s median %7.2f ms   p95 %7.2f ms   (n=%d)\n' "ced run, direct" "$d" "$(p95 <"$direct")" "$N"
printf '%-34s median %7.2f ms   p95 %7.2f ms   (n=%d)\n' "ced run, through the executor" "$e" "$(p95 <"$viaexec")" "$N"
printf '%-34s %+7.2f ms   ratio %5.3f\n' "executor overhead per run" "$(awk -v a="$e" -v b="$d" 'BEGIN { print a - b }')" \
    "$(awk -v a="$e" -v b="$d" 'BEGIN { print a / b }')"
printf '%-34s %s\n' "executor idle RSS" "$(grep VmRSS "/proc/$EXEC_PID/status" | awk '{print $2 " " $3}')"
rm -f "$direct" "$viaexec"
