#!/usr/bin/env bash
# Installs the Debian packages into a fresh Debian root made by debootstrap
# and follows the README's quickstart there: dispatcher set-up, pairing an
# agent on the same root, and a run through the executor as the service user.
# Everything happens in private mount, network, PID and UTS namespaces, so
# the fixed ports (7443, 7444) and mounts never touch the host, and every
# process ends with the namespace.
#
#   bash scripts/test-deb.sh DEBDIR [CACHE]
#
# DEBDIR holds ctrl-exec*.deb (scripts/deb.sh). The debootstrap root is built
# once, for this host's Debian release, into CACHE (default
# target/debootstrap/<release>.tar) and reused.
# Needs root, debootstrap, unshare, ip and network access to the Debian
# mirror (CE_DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail
DEBS=$(realpath "${1:?usage: test-deb.sh DEBDIR [CACHE]}")
# This host's release, so a binary built here (static or not) runs there.
SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
SUITE=${SUITE:-bookworm}
CACHE=${2:-target/debootstrap/$SUITE.tar}
MIRROR=${CE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ ! -f "$CACHE" ]; then
    mkdir -p "$(dirname "$CACHE")"
    tmp=$(mktemp -d /var/tmp/ce-debootstrap.XXXXXX)
    debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 ||
        { tail -20 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; echo "debootstrap failed" >&2; exit 1; }
    chmod 0755 "$tmp"
    tar -C "$tmp" -cf "$CACHE.new" . && mv "$CACHE.new" "$CACHE"
    rm -rf "$tmp" "$tmp.log"
fi
ROOT=$(mktemp -d /var/tmp/ce-debroot.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
tar -C "$ROOT" -xf "$CACHE"
# mktemp made it 0700: as the root of the tree, it must be searchable by all.
chmod 0755 "$ROOT"
mkdir -p "$ROOT/tmp/debs"
cp "$DEBS"/ctrl-exec*.deb "$ROOT/tmp/debs/"

# The steps inside the root, as README.md's quickstart gives them.
cat >"$ROOT/tmp/quickstart.sh" <<'STEPS'
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }
mode() { stat -c '%a %U:%G' "$1"; }
expect_mode() { [ "$(mode "$1")" = "$2" ] || fail "$1 is $(mode "$1"), want $2"; }
wait_for() { # FILE PATTERN: polls 10 s
    i=0; while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || { cat "$1" >&2; fail "no '$2' in $1"; }; sleep 0.1
    done
}

echo "== install"
dpkg -i /tmp/debs/ctrl-exec_*.deb /tmp/debs/ctrl-exec-dispatcher_*.deb /tmp/debs/ctrl-exec-agent_*.deb
getent passwd ctrl-exec-agent >/dev/null || fail "no user ctrl-exec-agent"
getent passwd ctrl-exec >/dev/null || fail "no user ctrl-exec"
expect_mode /etc/ctrl-exec-agent "750 root:ctrl-exec-agent"
expect_mode /etc/ctrl-exec-agent/agent.conf "640 root:ctrl-exec-agent"
expect_mode /var/lib/ctrl-exec-agent "750 ctrl-exec-agent:ctrl-exec-agent"
expect_mode /etc/ctrl-exec "750 root:ctrl-exec"
expect_mode /var/lib/ctrl-exec/agents "2770 root:ctrl-exec"
for u in ctrl-exec-agent ctrl-exec-exec ctrl-exec-api ctrl-exec-maintenance; do
    ls /usr/lib/systemd/system/$u.* >/dev/null || fail "no unit $u"
done
grep -q '^ExecStart=/usr/bin/ctrl-exec-agent serve' /usr/lib/systemd/system/ctrl-exec-agent.service ||
    fail "agent unit does not start /usr/bin/ctrl-exec-agent"

echo "== dispatcher"
ced setup-ca | tee /tmp/setup-ca.out
FP=$(grep -o 'sha256:[0-9a-f]*' /tmp/setup-ca.out | head -n 1)
ced setup-ctrl-exec
expect_mode /etc/ctrl-exec/ctrl-exec.key "640 root:ctrl-exec"
ctrl-exec-api --check || fail "the API cannot start on the fresh install"
ced check-config >/tmp/check.out || { cat /tmp/check.out >&2; fail "check-config fails on the fresh install"; }
grep -q 'Access OK (ctrl-exec' /tmp/check.out || { cat /tmp/check.out >&2; fail "check-config does not check the API user"; }
chmod 0600 /etc/ctrl-exec/ctrl-exec.key
if ced check-config >/tmp/check.out; then fail "check-config passed with a key the API cannot read"; fi
grep -q 'Access error: ctrl-exec cannot read /etc/ctrl-exec/ctrl-exec.key (0600 uid 0 gid [0-9]*); fix: chgrp ctrl-exec' /tmp/check.out ||
    { cat /tmp/check.out >&2; fail "check-config does not name the unreadable key"; }
chmod 0640 /etc/ctrl-exec/ctrl-exec.key
ced pairing-mode </dev/null >/tmp/pairing.out 2>&1 &
wait_for /tmp/pairing.out 'port 7444'

echo "== agent"
printf '#!/bin/sh\necho "hello from $(hostname) as $(id -un)"\n' >/opt/ctrl-exec-scripts/hello.sh
chmod 0755 /opt/ctrl-exec-scripts/hello.sh
echo 'hello = /opt/ctrl-exec-scripts/hello.sh' >>/etc/ctrl-exec-agent/scripts.conf
REQ=$(cea request-pairing --dispatcher 127.0.0.1 --ca-fingerprint "$FP" --background --timeout 60)
ced list-requests
ced approve "$REQ"
i=0; while ! cea paired; do i=$((i + 1)); [ $i -lt 100 ] || fail "never paired"; sleep 0.1; done
expect_mode /etc/ctrl-exec-agent/agent.key "640 root:ctrl-exec-agent"
cea check-start --user ctrl-exec-agent
chmod 0600 /etc/ctrl-exec-agent/agent.key
if cea check-start --user ctrl-exec-agent 2>/tmp/check-start.err; then fail "check-start passed with an unreadable key"; fi
grep -q 'ctrl-exec-agent cannot read /etc/ctrl-exec-agent/agent.key' /tmp/check-start.err ||
    { cat /tmp/check-start.err >&2; fail "check-start does not name the key"; }
chmod 0640 /etc/ctrl-exec-agent/agent.key
# What the units do: the executor as root, the agent as its user.
mkdir -p -m 0755 /run/ctrl-exec-agent
ctrl-exec-exec serve /run/ctrl-exec-agent/exec.sock /etc/ctrl-exec-agent/agent.conf \
    /etc/ctrl-exec-agent/scripts.conf ctrl-exec-agent >/tmp/exec.out 2>&1 &
wait_for /tmp/exec.out 'listening on'
setpriv --reuid ctrl-exec-agent --regid ctrl-exec-agent --init-groups \
    ctrl-exec-agent serve >/tmp/agent.out 2>&1 &
wait_for /tmp/agent.out 'listening on'

echo "== run"
ced run agent1 hello | tee /tmp/run.out
grep -q 'hello from agent1 as ctrl-exec-agent' /tmp/run.out || fail "no hello from the agent"
cea self-check | tee /tmp/self-check.out
grep -q 'Job records OK' /tmp/self-check.out || fail "self-check does not see the executor"
echo "QUICKSTART OK"
STEPS

unshare --mount --net --pid --uts --fork bash -c '
    set -eu
    mount --make-rprivate /
    ip link set lo up
    hostname agent1
    mount -t proc proc "$1/proc"
    mount --rbind /dev "$1/dev"
    mount -t tmpfs tmpfs "$1/run"
    chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh /tmp/quickstart.sh
' quickstart "$ROOT"
