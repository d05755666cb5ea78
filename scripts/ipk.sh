#!/bin/sh
# Builds the OpenWrt package of the agent (ctrl-exec-agent_<version>_<arch>.ipk)
# from one static binary, in the format opkg reads: a gzipped tar holding
# debian-binary, control.tar.gz and data.tar.gz.
#
#   /usr/bin/ctrl-exec, links cea, ctrl-exec-agent, ctrl-exec-exec
#   /etc/init.d/ctrl-exec-agent            procd: executor and agent instances
#   /etc/ctrl-exec-agent/agent.conf        conffiles: opkg keeps edited copies
#   /etc/ctrl-exec-agent/scripts.conf
#   /etc/ctrl-exec-agent/state             state on flash (async results, staging)
#   /opt/ctrl-exec-scripts                 the allowlisted scripts
#
# The tree is staged by scripts/install.sh (--agent --init procd --prefix /usr),
# so it is what the installer lays down on a router; the state dir moves from
# RAM (/var) to flash so results and staged certificates survive a reboot.
#
#   sh scripts/ipk.sh BINARY [OPENWRT-ARCH] [OUTDIR]     (make ipk does this)
#
# OPENWRT-ARCH defaults from the binary (x86_64, aarch64_generic); pass the
# router's own (opkg print-architecture) when it differs, e.g. aarch64_cortex-a53.
set -eu
BIN=${1:?usage: ipk.sh BINARY [OPENWRT-ARCH] [OUTDIR]}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${3:-$HERE/target/ipk}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$HERE/Cargo.toml" | head -n 1)
ARCH=${2:-}
if [ -z "$ARCH" ]; then
    case $(od -An -tx1 -j18 -N1 "$BIN" | tr -d ' ') in
        3e) ARCH=x86_64 ;;
        b7) ARCH=aarch64_generic ;;
        *) echo "ipk.sh: cannot tell the architecture of $BIN; pass it" >&2; exit 1 ;;
    esac
fi
STATE=/etc/ctrl-exec-agent/state
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" "$WORK/data" "$WORK/control"

DESTDIR=$WORK/data sh "$HERE/scripts/install.sh" --agent --init procd --prefix /usr --binary "$BIN" >/dev/null
D=$WORK/data
# The router needs the agent's roles only.
for r in ced ctrl-exec-dispatcher ctrl-exec-api; do rm -f "$D/usr/bin/$r"; done
sed -i "s#^state_dir = .*#state_dir = $STATE#" "$D/etc/ctrl-exec-agent/agent.conf"
grep -q "^state_dir = $STATE\$" "$D/etc/ctrl-exec-agent/agent.conf"
rm -rf "$D/var"
mkdir -p "$D$STATE"
chmod 0644 "$D"/etc/ctrl-exec-agent/*.conf

C=$WORK/control
cat >"$C/control" <<CONTROL
Package: ctrl-exec-agent
Version: $VERSION
Architecture: $ARCH
Maintainer: ctrl-exec maintainers <ctrl-exec@localhost>
Section: admin
Installed-Size: $(du -sk "$D" | cut -f1)
Description: ctrl-exec agent: runs allowlisted scripts for paired dispatchers
 over HTTPS with mutual TLS; no SSH, no shell. Pair it, then
 /etc/init.d/ctrl-exec-agent enable && /etc/init.d/ctrl-exec-agent start.
CONTROL
printf '/etc/ctrl-exec-agent/agent.conf\n/etc/ctrl-exec-agent/scripts.conf\n' >"$C/conffiles"
cat >"$C/postinst" <<'POSTINST'
#!/bin/sh
# The service user and modes; nothing is started: the agent must be paired.
[ -n "$IPKG_INSTROOT" ] && exit 0
USER=ctrl-exec-agent
free_id() { awk -F: -v id="$2" '{ used[$3] = 1 } END { while (id in used) id++; print id }' "$1"; }
if ! grep -q "^$USER:" /etc/group; then
    echo "$USER:x:$(free_id /etc/group 9443):" >>/etc/group
fi
if ! grep -q "^$USER:" /etc/passwd; then
    gid=$(awk -F: -v n="$USER" '$1 == n { print $3 }' /etc/group)
    echo "$USER:x:$(free_id /etc/passwd "$gid"):$gid:ctrl-exec agent:/var/empty:/bin/false" >>/etc/passwd
    if [ -f /etc/shadow ]; then echo "$USER:*:0:0:99999:7:::" >>/etc/shadow; fi
fi
chown root:$USER /etc/ctrl-exec-agent /etc/ctrl-exec-agent/agent.conf /etc/ctrl-exec-agent/scripts.conf /opt/ctrl-exec-scripts
chmod 0750 /etc/ctrl-exec-agent /opt/ctrl-exec-scripts
chmod 0640 /etc/ctrl-exec-agent/agent.conf /etc/ctrl-exec-agent/scripts.conf
chown $USER:$USER /etc/ctrl-exec-agent/state
chmod 0750 /etc/ctrl-exec-agent/state
if [ -f /etc/ctrl-exec-agent/agent.key ]; then
    chgrp $USER /etc/ctrl-exec-agent/agent.key && chmod 0640 /etc/ctrl-exec-agent/agent.key
fi
echo "ctrl-exec-agent: pair, then start:"
echo "  cea request-pairing --dispatcher <host> --ca-fingerprint sha256:<hex>"
echo "  /etc/init.d/ctrl-exec-agent enable && /etc/init.d/ctrl-exec-agent start"
exit 0
POSTINST
cat >"$C/prerm" <<'PRERM'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] && exit 0
/etc/init.d/ctrl-exec-agent stop >/dev/null 2>&1 || true
/etc/init.d/ctrl-exec-agent disable >/dev/null 2>&1 || true
exit 0
PRERM
chmod 0755 "$C/postinst" "$C/prerm"

echo "2.0" >"$WORK/debian-binary"
tar --numeric-owner --owner=0 --group=0 -C "$C" -czf "$WORK/control.tar.gz" .
tar --numeric-owner --owner=0 --group=0 -C "$D" -czf "$WORK/data.tar.gz" .
IPK=$OUT/ctrl-exec-agent_${VERSION}_${ARCH}.ipk
tar --numeric-owner --owner=0 --group=0 -C "$WORK" -czf "$IPK" ./debian-binary ./control.tar.gz ./data.tar.gz
echo "$IPK $(stat -c %s "$IPK") bytes"
