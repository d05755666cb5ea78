#!/bin/sh
# Checks the layout of an agent .ipk (scripts/ipk.sh) without OpenWrt: the
# outer members opkg expects, the control fields and conffiles, maintainer
# scripts, the binary and its links, the procd script and the seed config
# (state on flash, the executor in use). Prints one line per problem and
# exits 1 if there is any; prints "ipk layout OK" otherwise.
#
#   sh scripts/check-ipk.sh PACKAGE.ipk
set -eu
IPK=${1:?usage: check-ipk.sh PACKAGE.ipk}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
bad=0
problem() { echo "ipk: $*"; bad=1; }

tar -C "$W" -xzf "$IPK" || { echo "ipk: not a gzipped tar"; exit 1; }
members=$(tar -tzf "$IPK" | tr '\n' ' ')
[ "$members" = "./debian-binary ./control.tar.gz ./data.tar.gz " ] ||
    problem "members are '$members', want debian-binary, control.tar.gz, data.tar.gz in that order"
[ "$(cat "$W/debian-binary")" = "2.0" ] || problem "debian-binary is not 2.0"
[ "$bad" = 0 ] || exit 1
mkdir "$W/c" "$W/d"
tar -C "$W/c" -xzf "$W/control.tar.gz"
tar -C "$W/d" -xzf "$W/data.tar.gz"

for field in Package Version Architecture Maintainer Description Installed-Size; do
    grep -q "^$field: ." "$W/c/control" || problem "control has no $field"
done
grep -qx 'Package: ctrl-exec-agent' "$W/c/control" || problem "package is not ctrl-exec-agent"
for f in /etc/ctrl-exec-agent/agent.conf /etc/ctrl-exec-agent/scripts.conf; do
    grep -qx "$f" "$W/c/conffiles" || problem "conffiles lacks $f"
    [ -f "$W/d$f" ] || problem "conffile $f is not in the data"
done
for s in postinst prerm; do
    [ -x "$W/c/$s" ] || problem "no executable $s"
    sh -n "$W/c/$s" || problem "$s: shell syntax"
done

[ -x "$W/d/usr/bin/ctrl-exec" ] || problem "no /usr/bin/ctrl-exec"
head -c 4 "$W/d/usr/bin/ctrl-exec" | od -An -c | grep -q 'E   L   F' || problem "/usr/bin/ctrl-exec is not ELF"
for r in cea ctrl-exec-agent ctrl-exec-exec; do
    [ "$(readlink "$W/d/usr/bin/$r" || true)" = ctrl-exec ] || problem "/usr/bin/$r is not a link to ctrl-exec"
done
for r in ced ctrl-exec-api; do
    [ ! -e "$W/d/usr/bin/$r" ] || problem "/usr/bin/$r: dispatcher roles do not belong on the router"
done

init=$W/d/etc/init.d/ctrl-exec-agent
[ -x "$init" ] || problem "no executable /etc/init.d/ctrl-exec-agent"
sh -n "$init" || problem "init script: shell syntax"
head -n 1 "$init" | grep -qx '#!/bin/sh /etc/rc.common' || problem "init script is not an rc.common script"
grep -q '^USE_PROCD=1' "$init" || problem "init script does not use procd"
grep -q '^PROG=/usr/bin/ctrl-exec-agent$' "$init" || problem "init script does not run /usr/bin/ctrl-exec-agent"
grep -q 'procd_set_param respawn 3600 5 5' "$init" || problem "init script has no bounded respawn"
grep -q 'check-start' "$init" || problem "init script does not check before starting"
grep -q '^service_triggers()' "$init" || problem "init script has no service_triggers"
grep -q '/usr/local' "$init" && problem "init script still names /usr/local"

conf=$W/d/etc/ctrl-exec-agent/agent.conf
grep -qx 'state_dir = /etc/ctrl-exec-agent/state' "$conf" || problem "state_dir is not on flash"
[ -d "$W/d/etc/ctrl-exec-agent/state" ] || problem "no state dir in the data"
grep -qx 'executor_socket = /var/run/ctrl-exec-agent/exec.sock' "$conf" || problem "agent.conf does not use the executor"
grep -qx '\[profile default\]' "$conf" || problem "agent.conf has no [profile default]"
[ -d "$W/d/opt/ctrl-exec-scripts" ] || problem "no /opt/ctrl-exec-scripts"
[ ! -e "$W/d/var" ] || problem "the data writes /var (RAM on OpenWrt)"

[ "$bad" = 0 ] || exit 1
echo "ipk layout OK"
