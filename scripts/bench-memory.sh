#!/usr/bin/env bash
# Memory figures against the demo deployment (scripts/demo.sh, left running by
# scripts/bench.sh) under hostile 1 MiB bodies:
#
# - the API: MEM_CLIENTS (64, the API's default api_max_children) concurrent
#   clients each POST a 1 MiB body to /run, in two shapes: a wide array of
#   small arrays under an unknown key ({"junk":[[[]],[[]],…]}) and a wide
#   host list ({"hosts":["a","a",…]});
# - the agent (web1): MEM_AGENT_CLIENTS (1) mTLS clients with the
#   dispatcher's certificate each POST the 1 MiB wide body to /run.
#
# For each: VmRSS just before, the peak while the bodies are handled (VmHWM,
# reset first through /proc/PID/clear_refs; where that is refused, the
# highest VmRSS sampled every 2 ms), and VmRSS once it stops falling after
# the clients are done (polled each second, at most MEM_SETTLE=10 s). The
# ratio is the peak's growth over idle divided by the body bytes sent.
#
#   bash scripts/bench-memory.sh
#
# Needs python3 (the clients). `ced`'s own peak is not measured: it would
# need a fake agent answering with a hostile body.
set -euo pipefail
MEM_CLIENTS=${MEM_CLIENTS:-64}
MEM_AGENT_CLIENTS=${MEM_AGENT_CLIENTS:-1}
MEM_SETTLE=${MEM_SETTLE:-10}
ROOT="$PWD/demo-deployment"
[ -f "$ROOT/env" ] || { echo "no demo deployment in $ROOT: run scripts/bench.sh" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-memory: python3 missing, skipped" >&2; exit 0; }
# shellcheck disable=SC1091
. "$ROOT/env"
WORK=$(mktemp -d)
CLIENT_PID=
cleanup() {
    [ -z "$CLIENT_PID" ] || kill "$CLIENT_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The demo's processes: two agents (web1 first), then the API.
API_PID= AGENT_PID=
for p in $AGENT_PIDS; do
    cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null || true)
    case $cmd in
        *ctrl-exec-api*) API_PID=$p ;;
        *cea*serve*) [ -n "$AGENT_PID" ] || AGENT_PID=$p ;;
    esac
done
API_PORT=${API#*:}
AGENT_PORT=$(grep -o '"port": *[0-9]*' "$ROOT/dispatcher/state/agents/web1.json" | grep -o '[0-9]*$')

# The clients: build one 1 MiB body of the shape, open every connection,
# start all at once, send, read each answer to EOF, while a thread samples
# the server's VmRSS. Prints "statuses ... sampled_max_kb N".
# Args: pid port clients shape(wide|hosts) api|agent [cert key ca].
cat >"$WORK/clients.py" <<'PY'
import collections, socket, ssl, sys, threading, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
shape, kind = sys.argv[4], sys.argv[5]
SIZE = 1 << 20
head, unit, last = {
    "wide": (b'{"junk":[', b'[[]],', b'[[]]]}'),
    "hosts": (b'{"hosts":[', b'"a",', b'"a"]}'),
}[shape]
k = (SIZE - len(head) - len(last)) // len(unit)
pad = b" " * (SIZE - len(head) - len(last) - k * len(unit))
body = head + pad + unit * k + last
assert len(body) == SIZE
req = (b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
       b"Authorization: Bearer demo-token\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n" % SIZE) + body
ctx = None
if kind == "agent":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(sys.argv[8])
    ctx.load_cert_chain(sys.argv[6], sys.argv[7])

def rss_kb():
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

peak = [rss_kb()]
done = threading.Event()
def sampler():
    while not done.is_set():
        try: peak[0] = max(peak[0], rss_kb())
        except OSError: return
        time.sleep(0.002)

statuses = collections.Counter()
lock = threading.Lock()
start = threading.Barrier(n)
def client():
    status = "error"
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="web1")
        start.wait(60)
        try:
            s.sendall(req)
        except OSError:
            pass  # answered (and closed) before the whole body was read
        got = b""
        while True:
            try: chunk = s.recv(65536)
            except OSError: break
            if not chunk: break
            got += chunk
        if got.startswith(b"HTTP/"):
            status = got.split(b" ", 2)[1].decode()
        s.close()
    except Exception as e:
        status = type(e).__name__
        try: start.abort()
        except Exception: pass
    with lock:
        statuses[status] += 1

threading.Thread(target=sampler, daemon=True).start()
threads = [threading.Thread(target=client) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
done.set()
time.sleep(0.01)
peak[0] = max(peak[0], rss_kb())
print("statuses", ",".join("%sx%d" % kv for kv in sorted(statuses.items())),
      "sampled_max_kb", peak[0])
PY

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f MiB", kb / 1024 }'; }

# measure LABEL PID PORT CLIENTS SHAPE KIND [CERT KEY CA]
measure() {
    local label=$1 pid=$2 port=$3 n=$4 shape=$5 kind=$6; shift 6
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/status" ]; then
        printf '%-44s skipped: process not running\n' "$label"; return
    fi
    local reset=1 idle hwm out statuses sampled peak peak_note= after prev i waited=0
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || reset=0
    idle=$(status_kb "$pid" VmRSS)
    timeout 150 python3 "$WORK/clients.py" "$pid" "$port" "$n" "$shape" "$kind" "$@" >"$WORK/out" 2>"$WORK/err" &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || true
    CLIENT_PID=
    out=$(cat "$WORK/out")
    if [ -z "$out" ]; then
        printf '%-44s clients failed: %s\n' "$label" "$(tail -1 "$WORK/err")"; return
    fi
    statuses=$(awk '{ print $2 }' <<<"$out")
    sampled=$(awk '{ print $4 }' <<<"$out")
    hwm=$(status_kb "$pid" VmHWM)
    if [ "$reset" = 1 ]; then peak=$hwm; else peak=$sampled peak_note=" (sampled; VmHWM not resettable)"; fi
    # Settle: first reading a second after, then each second until it stops falling.
    sleep 1; waited=1; after=$(status_kb "$pid" VmRSS)
    for i in $(seq 2 "$MEM_SETTLE"); do
        sleep 1; waited=$i
        prev=$after; after=$(status_kb "$pid" VmRSS)
        [ "$after" -lt "$prev" ] || break
    done
    printf '%-44s idle %9s  peak %9s  after %9s (%ds)  growth/body %.3f  [%s]%s\n' \
        "$label" "$(mib "$idle")" "$(mib "$peak")" "$(mib "$after")" "$waited" \
        "$(awk -v p="$peak" -v i="$idle" -v n="$n" 'BEGIN { print (p - i) * 1024 / (n * 1048576) }')" \
        "$statuses" "$peak_note"
}

echo
echo "memory: hostile 1 MiB bodies to /run (answers in brackets: status x count)"
measure "API RSS ${MEM_CLIENTS}x1MiB wide bodies" "$API_PID" "$API_PORT" "$MEM_CLIENTS" wide api
measure "API RSS ${MEM_CLIENTS}x1MiB host lists" "$API_PID" "$API_PORT" "$MEM_CLIENTS" hosts api
measure "agent RSS ${MEM_AGENT_CLIENTS}x1MiB wide body (mTLS)" "$AGENT_PID" "$AGENT_PORT" "$MEM_AGENT_CLIENTS" wide agent \
    "$ROOT/dispatcher/ctrl-exec.crt" "$ROOT/dispatcher/ctrl-exec.key" "$ROOT/dispatcher/ca.crt"
printf '%-44s skipped (would need a fake agent sending a hostile answer)\n' "ced peak RSS"
