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
