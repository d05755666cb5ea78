#!/usr/bin/env bash
# Flood figures against the demo deployment (scripts/demo.sh, left running by
# scripts/bench.sh): stalls FLOOD connections of each kind (silent TCP; half a
# TLS ClientHello; a finished TLS handshake, or plain HTTP on the API, then
# half a request) against the agent port, the pairing port and the API port,
# first all from one IP (127.0.0.2), then spread over 127.0.0.2-127.0.0.201,
# and times the legitimate request (from 127.0.0.1) without and with each
# flood. Prints the median of FLOOD_N runs side by side.
#
#   bash scripts/bench-flood.sh [BIN]      (FLOOD=300 FLOOD_N=10 by default)
#
# Needs python3 (the flood clients bind 127.0.0.x source addresses) and,
# for the agent's "handshake then half a request" kind, openssl (a client
# certificate from the demo CA whose serial the agent does not trust).
set -euo pipefail
BIN=$(realpath "${1:-target/x86_64-unknown-linux-musl/release/ctrl-exec}")
FLOOD=${FLOOD:-300}
FLOOD_N=${FLOOD_N:-10}
ROOT="$PWD/demo-deployment"
[ -f "$ROOT/env" ] || { echo "no demo deployment in $ROOT: run scripts/bench.sh" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-flood: python3 missing, skipped" >&2; exit 0; }
# shellcheck disable=SC1091
. "$ROOT/env"
export PATH="$ROOT/bin:$PATH" ENVEXEC_TOKEN=demo-token
WORK=$(mktemp -d)
FLOOD_PID=
PAIR_STARTED=
cleanup() {
    [ -z "$FLOOD_PID" ] || kill "$FLOOD_PID" 2>/dev/null || true
    [ -z "$PAIR_STARTED" ] || ced --config "$DCONF" pairing-mode stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

AGENT_PORT=$(grep -o '"port": *[0-9]*' "$ROOT/dispatcher/state/agents/web1.json" | grep -o '[0-9]*$')
API_PORT=${API#*:}

# An untrusted client certificate from the demo CA, for the agent's third kind.
CERT= KEY=
CA_KEY=$(ls "$ROOT"/dispatcher/ca.key "$ROOT"/dispatcher/ca-key.pem 2>/dev/null | head -1 || true)
if command -v openssl >/dev/null && [ -n "$CA_KEY" ]; then
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=stranger \
        -keyout "$WORK/c.key" -out "$WORK/c.csr" >/dev/null 2>&1 &&
    openssl x509 -req -in "$WORK/c.csr" -CA "$ROOT/dispatcher/ca.crt" -CAkey "$CA_KEY" \
        -CAcreateserial -days 1 -out "$WORK/c.crt" >/dev/null 2>&1 &&
    CERT="$WORK/c.crt" KEY="$WORK/c.key"
fi

# The flood client: opens every connection, prints "ready", holds them
# until killed. Args: port count first_source sources tls(0/1) [cert key].
cat >"$WORK/flood.py" <<'PY'
import signal, socket, ssl, sys
port, n, first, spread, tls = (int(a) for a in sys.argv[1:6])
cert = sys.argv[6:8]
held = []
def conn(i):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (first + i % spread), 0))
    s.connect(("127.0.0.1", port))
    return s
half_hello = bytes([0x16, 3, 1, 2, 0, 1, 0, 1])
half_req = b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
for i in range(n):
    try: held.append(conn(i))
    except OSError: pass
for i in range(n):
    try:
        s = conn(i); s.send(half_hello); held.append(s)
    except OSError: pass
ctx = None
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
for i in range(n):
    try:
        s = conn(i)
        if ctx:
            s = ctx.wrap_socket(s)
        s.send(half_req); held.append(s)
    except (OSError, ssl.SSLError): pass
print("ready", len(held), flush=True)
signal.pause()
PY

# flood_on PORT FIRST SPREAD TLS [CERT KEY]: starts the flood, waits for it.
flood_on() {
    python3 "$WORK/flood.py" "$1" "$FLOOD" "$2" "$3" "$4" "${@:5}" >"$WORK/ready" 2>/dev/null &
    FLOOD_PID=$!
    local i
    for i in $(seq 600); do grep -q ready "$WORK/ready" 2>/dev/null && return; sleep 0.1; done
    echo "flood on port $1 never got ready" >&2
}
flood_off() { kill "$FLOOD_PID" 2>/dev/null || true; wait "$FLOOD_PID" 2>/dev/null || true; FLOOD_PID=; }

# median CMD...: runs CMD FLOOD_N times; prints the median wall time in ms
# and the number of failed runs.
median() {
    local i t0 t1 rc fails=0
    : >"$WORK/samples"
    for i in $(seq "$FLOOD_N"); do
        t0=$(date +%s%N); rc=0
        "$@" >/dev/null 2>&1 || rc=$?
        t1=$(date +%s%N)
        [ "$rc" = 0 ] || fails=$((fails + 1))
        echo $(( (t1 - t0) / 1000 )) >>"$WORK/samples"
    done
    sort -n "$WORK/samples" | awk -v f=$fails '{ v[NR] = $1 } END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%8.2f ms%s", m / 1000, (f ? sprintf(" (%d failed)", f) : "") }'
}

http() { # METHOD PATH [BODY] over bash /dev/tcp
    local body=${3:-}
    exec 3<>"/dev/tcp/127.0.0.1/$API_PORT"
    printf '%s %s HTTP/1.0\r\nAuthorization: Bearer demo-token\r\nContent-Length: %d\r\n\r\n%s' "$1" "$2" "${#body}" "$body" >&3
    grep -q '^HTTP/1.[01] 200' <&3; local rc=$?; exec 3<&-; return $rc
}

# A fresh agent identity per pairing request (each is queued, then denied).
PAIR_DIR="$WORK/pair"
mkdir -p "$PAIR_DIR"
pair_request() {
    local d; d=$(mktemp -d "$PAIR_DIR/a.XXXX")
    printf 'port = 0\nbind = 127.0.0.1\nhostname = flood-%s\ncert = %s/agent.crt\nkey = %s/agent.key\nca = %s/ca.crt\nstate_dir = %s/state\n' \
        "${d##*.}" "$d" "$d" "$d" "$d" >"$d/agent.conf"
    local req
    req=$(cea --config "$d/agent.conf" request-pairing --dispatcher 127.0.0.1 --port "$PAIR_PORT" \
        --background --timeout 5) || return 1
    ced --config "$DCONF" deny "$req" >/dev/null 2>&1 || true
}

# A fresh pairing session: its per-IP rate limit (10 a minute) would
# otherwise count the timed requests themselves.
pairing_restart() {
    [ -z "$PAIR_STARTED" ] || ced --config "$DCONF" pairing-mode stop >/dev/null 2>&1 || true
    ced --config "$DCONF" pairing-mode start --port 0 --timeout 600 >"$WORK/pairing.out"
    PAIR_STARTED=1
    PAIR_PORT=$(grep -oE 'on port [0-9]+' "$WORK/pairing.out" | grep -oE '[0-9]+')
}
pairing_restart
no_reset() { :; }

row() { # LABEL PORTVAR TLS RESET CERTARGS... -- CMD...
    local label=$1 portvar=$2 tls=$3 reset=$4; shift 4
    local extra=()
    while [ "$1" != -- ]; do extra+=("$1"); shift; done; shift
    local idle one many
    $reset; idle=$(median "$@")
    $reset; flood_on "${!portvar}" 2 1 "$tls" "${extra[@]}"; one=$(median "$@"); flood_off
    $reset; flood_on "${!portvar}" 2 200 "$tls" "${extra[@]}"; many=$(median "$@"); flood_off
    printf '%-30s %-22s %-22s %-22s\n' "$label" "$idle" "$one" "$many"
}

echo
echo "flood: $FLOOD stalled connections of each kind (x3), median of $FLOOD_N runs"
printf '%-30s %-22s %-22s %-22s\n' "legitimate request" "no flood" "flood from 1 IP" "flood from 200 IPs"
certargs=()
[ -z "$CERT" ] || certargs=("$CERT" "$KEY")
row "ced run web1 hello (7443)" AGENT_PORT 1 no_reset "${certargs[@]}" -- ced --config "$DCONF" run web1 hello
row "pairing request (7444)" PAIR_PORT 1 pairing_restart -- pair_request
row "API GET /health (7445)" API_PORT 0 no_reset -- http GET /health
row "API POST /run (7445)" API_PORT 0 no_reset -- http POST /run '{"hosts":["web1"],"script":"hello"}'
# Back to normal within a second of the flood going away.
flood_on "$AGENT_PORT" 2 200 1 "${certargs[@]}"; flood_off
t0=$(date +%s%N); ced --config "$DCONF" run web1 hello >/dev/null; t1=$(date +%s%N)
awk -v us=$(( (t1 - t0) / 1000 )) 'BEGIN { printf "%-30s %8.2f ms\n", "ced run right after the flood", us / 1000 }'
