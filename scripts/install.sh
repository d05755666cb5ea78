#!/bin/sh
# Install ctrl-exec roles: the static binary, its role links, users, directories,
# seed configuration and service files. POSIX sh: runs under bash, dash and
# busybox ash (Debian, Alpine, OpenWrt). Run as root.
#
#   scripts/install.sh --agent | --dispatcher | --api | --uninstall
#                      [--prefix DIR] [--binary PATH] [--init systemd|openrc|procd|none]
#
# Never overwrites an existing configuration file, never enables or starts a
# service, and --uninstall keeps configuration, certificates, registry and scripts.
set -eu

PROG=install.sh
PREFIX=/usr/local
BINARY=
INIT=
DO_AGENT=0
DO_DISPATCHER=0
DO_API=0
DO_UNINSTALL=0
ROLE_LINKS="ced ctrl-exec-dispatcher cea ctrl-exec-agent ctrl-exec-api ctrl-exec-exec"
DESTDIR=${DESTDIR:-}

AGENT_USER=ctrl-exec-agent
AGENT_ETC=/etc/ctrl-exec-agent
AGENT_STATE=/var/lib/ctrl-exec-agent
AGENT_SCRIPTS=/opt/ctrl-exec-scripts
DISP_USER=ctrl-exec
DISP_ETC=/etc/ctrl-exec
DISP_STATE=/var/lib/ctrl-exec

usage() {
    cat <<EOF
Usage: $PROG ROLE... [--prefix DIR] [--binary PATH] [--init SYSTEM]
       $PROG --uninstall [--prefix DIR]

Roles (one or more):
  --agent        agent host: user/group $AGENT_USER, $AGENT_ETC (agent.conf,
                 scripts.conf), $AGENT_SCRIPTS, $AGENT_STATE, the agent and
                 executor (ctrl-exec-exec) service files; agent.conf is seeded
                 to run scripts through the executor
  --dispatcher   dispatcher host: user/group $DISP_USER, $DISP_ETC (ctrl-exec.conf),
                 $DISP_STATE/{pairing,agents,locks,runs}, the maintenance timer
                 (systemd) or crontab entry ($DISP_ETC/ctrl-exec-maintenance.crontab)
  --api          the ctrl-exec-api service file (needs $DISP_ETC/ctrl-exec.conf,
                 i.e. --dispatcher first or together)
  --uninstall    remove the binary, role links and service files; keep
                 configuration, certificates, registry, scripts and users

Options:
  --prefix DIR   install under DIR/bin (default /usr/local)
  --binary PATH  the ctrl-exec binary (default ./target/x86_64-unknown-linux-musl/
                 release/ctrl-exec, else ./target/release/ctrl-exec)
  --init SYSTEM  systemd, openrc, procd or none (default: detected)
  -h, --help     this help

Environment:
  DESTDIR=DIR    stage everything under DIR (packaging): no users are created,
                 no ownership is changed, no service manager is called

The binary goes to PREFIX/bin/ctrl-exec with the links $ROLE_LINKS.
Existing configuration files are never overwritten; services are installed but
not enabled or started.
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
warn() { echo "$PROG: warning: $*" >&2; }
say() { echo "$*"; }

need_arg() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
    case $1 in
        --agent) DO_AGENT=1 ;;
        --dispatcher) DO_DISPATCHER=1 ;;
        --api) DO_API=1 ;;
        --uninstall) DO_UNINSTALL=1 ;;
        --prefix) need_arg "$1" $#; PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#*=} ;;
        --binary) need_arg "$1" $#; BINARY=$2; shift ;;
        --binary=*) BINARY=${1#*=} ;;
        --init) need_arg "$1" $#; INIT=$2; shift ;;
        --init=*) INIT=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

ROLES=$((DO_AGENT + DO_DISPATCHER + DO_API))
if [ "$DO_UNINSTALL" = 1 ] && [ "$ROLES" -gt 0 ]; then
    die "--uninstall cannot be combined with a role"
fi
if [ "$DO_UNINSTALL" = 0 ] && [ "$ROLES" = 0 ]; then
    usage >&2
    die "choose a role: --agent, --dispatcher, --api or --uninstall"
fi
case $PREFIX in
    /*) PREFIX=${PREFIX%/} ;;
    *) die "--prefix must be an absolute path, got '$PREFIX'" ;;
esac
[ -n "$PREFIX" ] || PREFIX=/
case $INIT in
    "" | systemd | openrc | procd | none) ;;
    *) die "--init must be systemd, openrc, procd or none, got '$INIT'" ;;
esac
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "must run as root (try: sudo sh $0 ...)"
fi

BINDIR=$PREFIX/bin
if [ "$PREFIX" = / ]; then BINDIR=/bin; fi

# Where the service files live: the repository (scripts/..) or next to this script.
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -d "$HERE/../systemd" ] || [ -d "$HERE/../openrc" ] || [ -d "$HERE/../procd" ]; then
    SRCDIR=$(cd "$HERE/.." && pwd)
else
    SRCDIR=$HERE
fi

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# d PATH: PATH under DESTDIR.
d() { echo "$DESTDIR$1"; }

# set_owner OWNER PATH: chown, unless staging.
set_owner() {
    if [ -n "$DESTDIR" ]; then return 0; fi
    chown "$1" "$2" || die "cannot chown $1 $2"
}

# make_dir PATH MODE OWNER: create (or fix) a directory.
make_dir() {
    mkdir -p "$(d "$1")" || die "cannot create $1"
    set_owner "$3" "$(d "$1")"
    chmod "$2" "$(d "$1")" || die "cannot chmod $2 $1"
}

# seed_file PATH MODE OWNER: write stdin to PATH unless it exists.
seed_file() {
    target=$(d "$1")
    if [ -e "$target" ]; then
        say "  kept existing $1"
        cat >/dev/null
        return 0
    fi
    tmp="$target.new.$$"
    cat >"$tmp" || { rm -f "$tmp"; die "cannot write $1"; }
    chmod "$2" "$tmp"
    set_owner "$3" "$tmp"
    mv -f "$tmp" "$target" || die "cannot write $1"
    say "  created $1 ($2)"
}

nologin_shell() {
    for s in /sbin/nologin /usr/sbin/nologin /bin/false; do
        if [ -x "$s" ]; then echo "$s"; return 0; fi
    done
    echo /bin/false
}

# free_id FILE START: the first numeric id >= START unused in field 3 of FILE.
free_id() {
    awk -F: -v id="$2" '{ used[$3] = 1 } END { while (id in used) id++; print id }' "$1"
}

# ensure_account NAME: system group and user NAME (no home, no shell).
ensure_account() {
    name=$1
    if [ -n "$DESTDIR" ]; then
        say "  DESTDIR set: not creating user/group $name (do it at package install)"
        return 0
    fi
    shell=$(nologin_shell)
    if ! grep -q "^$name:" /etc/group; then
        if command -v groupadd >/dev/null 2>&1; then
            groupadd --system "$name"
        elif command -v addgroup >/dev/null 2>&1; then
            addgroup -S "$name"
        else
            gid=$(free_id /etc/group 9443)
            echo "$name:x:$gid:" >>/etc/group
        fi || die "cannot create group $name"
        say "  created group $name"
    fi
    if ! grep -q "^$name:" /etc/passwd; then
        if command -v useradd >/dev/null 2>&1; then
            useradd --system --gid "$name" --no-create-home --home-dir /nonexistent \
                --shell "$shell" --comment "ctrl-exec" "$name"
        elif command -v adduser >/dev/null 2>&1; then
            adduser -S -D -H -h /nonexistent -s "$shell" -g ctrl-exec -G "$name" "$name"
        else
            gid=$(awk -F: -v n="$name" '$1 == n { print $3 }' /etc/group)
            uid=$(free_id /etc/passwd "$gid")
            echo "$name:x:$uid:$gid:ctrl-exec:/var/empty:$shell" >>/etc/passwd &&
                if [ -f /etc/shadow ]; then echo "$name:*:0:0:99999:7:::" >>/etc/shadow; fi
        fi || die "cannot create user $name"
        say "  created user $name"
    fi
}

detect_init() {
    if [ -n "$INIT" ]; then
        echo "$INIT"
    elif [ -f /etc/openwrt_release ] || { [ -x /sbin/procd ] && [ -f /etc/rc.common ]; }; then
        echo procd
    elif [ -d /run/systemd/system ]; then
        echo systemd
    elif command -v openrc-run >/dev/null 2>&1 || [ -x /sbin/openrc-run ]; then
        echo openrc
    elif command -v systemctl >/dev/null 2>&1; then
        echo systemd
    else
        echo none
    fi
}

find_binary() {
    if [ -n "$BINARY" ]; then
        [ -f "$BINARY" ] || die "--binary $BINARY: no such file"
        echo "$BINARY"
        return 0
    fi
    for b in ./target/x86_64-unknown-linux-musl/release/ctrl-exec ./target/release/ctrl-exec \
        "$SRCDIR/target/x86_64-unknown-linux-musl/release/ctrl-exec" \
        "$SRCDIR/target/release/ctrl-exec" "$(d "$BINDIR/ctrl-exec")"; do
        if [ -f "$b" ]; then echo "$b"; return 0; fi
    done
    die "no ctrl-exec binary found: run 'make static' or pass --binary PATH"
}

install_binary() {
    bin=$(find_binary)
    dest=$(d "$BINDIR")
    if ! out=$("$bin" --version 2>&1); then
        if [ -n "$DESTDIR" ]; then
            warn "$bin does not run on this host (cross-built?); installing anyway"
        else
            die "$bin does not run on this host (wrong architecture?): $out"
        fi
    fi
    mkdir -p "$dest" || die "cannot create $BINDIR"
    if [ "$bin" -ef "$dest/ctrl-exec" ]; then
        say "  using installed $BINDIR/ctrl-exec"
    else
        cp "$bin" "$dest/.ctrl-exec.new.$$" || die "cannot copy $bin to $BINDIR"
        chmod 0755 "$dest/.ctrl-exec.new.$$"
        mv -f "$dest/.ctrl-exec.new.$$" "$dest/ctrl-exec" || die "cannot install $BINDIR/ctrl-exec"
        say "  installed $BINDIR/ctrl-exec (${out:-version unknown})"
    fi
    for r in $ROLE_LINKS; do
        link=$dest/$r
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            mv -f "$link" "$link.bak" || die "cannot move old $BINDIR/$r aside"
            say "  moved old $BINDIR/$r to $BINDIR/$r.bak"
        fi
        ln -sf ctrl-exec "$link" || die "cannot link $BINDIR/$r"
    done
    say "  linked $ROLE_LINKS -> ctrl-exec"
}

# install_service KIND NAME: copy the service file for init system KIND, with
# the binary path rewritten to BINDIR. Never enables or starts it.
install_service() {
    kind=$1
    name=$2
    case $kind in
        systemd) src=$SRCDIR/systemd/$name.service; dst=/etc/systemd/system/$name.service; mode=0644 ;;
        openrc) src=$SRCDIR/openrc/$name; dst=/etc/init.d/$name; mode=0755 ;;
        procd) src=$SRCDIR/procd/$name; dst=/etc/init.d/$name; mode=0755 ;;
        *)
            say "  no init system selected: start '$BINDIR/$name' yourself"
            return 0
            ;;
    esac
    if [ ! -f "$src" ]; then
        warn "no $kind service file for $name (looked for $src); skipped"
        return 0
    fi
    mkdir -p "$(dirname "$(d "$dst")")"
    sed "s#/usr/local/bin/#$BINDIR/#g" "$src" >"$(d "$dst").new.$$" || die "cannot write $dst"
    chmod "$mode" "$(d "$dst").new.$$"
    mv -f "$(d "$dst").new.$$" "$(d "$dst")" || die "cannot write $dst"
    say "  installed $dst (not enabled)"
    if [ "$kind" = systemd ] && [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload || warn "systemctl daemon-reload failed"
    fi
}

# install_file SRC DST MODE: copy SRC to DST with the binary path rewritten to
# BINDIR (atomically; replaces a previous copy).
install_file() {
    mkdir -p "$(dirname "$(d "$2")")"
    sed "s#/usr/local/bin/#$BINDIR/#g" "$1" >"$(d "$2").new.$$" || die "cannot write $2"
    chmod "$3" "$(d "$2").new.$$"
    mv -f "$(d "$2").new.$$" "$(d "$2")" || die "cannot write $2"
}

# install_maintenance KIND: `ced maintain` every 4 hours: the systemd service
# and timer, or (any other init) a crontab entry to add to root's crontab.
# Like the services, never enabled here.
install_maintenance() {
    case $1 in
        systemd)
            for unit in ctrl-exec-maintenance.service ctrl-exec-maintenance.timer; do
                src=$SRCDIR/systemd/$unit
                if [ ! -f "$src" ]; then
                    warn "no $src; maintenance timer not installed"
                    return 0
                fi
                install_file "$src" "/etc/systemd/system/$unit" 0644
                say "  installed /etc/systemd/system/$unit (not enabled)"
            done
            if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
                systemctl daemon-reload || warn "systemctl daemon-reload failed"
            fi
            ;;
        *)
            src=$SRCDIR/cron/ctrl-exec-maintenance.crontab
            if [ ! -f "$src" ]; then
                warn "no $src; maintenance crontab entry not installed"
                return 0
            fi
            install_file "$src" "$DISP_ETC/ctrl-exec-maintenance.crontab" 0644
            say "  installed $DISP_ETC/ctrl-exec-maintenance.crontab (add it to root's crontab)"
            ;;
    esac
}

# run_cmd NAME: how to call a role link in printed instructions.
run_cmd() {
    if [ "$(command -v "$1" 2>/dev/null || true)" = "$BINDIR/$1" ]; then echo "$1"; else echo "$BINDIR/$1"; fi
}

# ---------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------

install_agent() {
    init=$1
    say "Agent:"
    # The executor's socket: in the runtime dir its service creates.
    case $init in
        procd) exec_socket=/var/run/ctrl-exec-agent/exec.sock ;;
        *) exec_socket=/run/ctrl-exec-agent/exec.sock ;;
    esac
    ensure_account "$AGENT_USER"
    make_dir "$AGENT_ETC" 0750 "root:$AGENT_USER"
    make_dir "$AGENT_SCRIPTS" 0750 "root:$AGENT_USER"
    make_dir "$AGENT_STATE" 0750 "$AGENT_USER:$AGENT_USER"

    # The trusted-dispatcher map lives beside agent.conf (root-owned, so the
    # agent user and its scripts cannot replace it; on flash on OpenWrt).
    trusted_line="#trusted_dispatchers_path = $AGENT_ETC/ctrl-exec-dispatchers"
    seed_file "$AGENT_ETC/agent.conf" 0640 "root:$AGENT_USER" <<EOF
# ctrl-exec agent configuration (see docs/INSTALL.md for every key).
# Whole-line comments only: a '#' after a value becomes part of the value.
# A reload (SIGHUP) re-reads this file (port, bind, max_children and the
# state paths need a restart), scripts.conf, the trusted-dispatcher map,
# revoked-serials and the certificates.

port = 7443
cert = $AGENT_ETC/agent.crt
key = $AGENT_ETC/agent.key
ca = $AGENT_ETC/ca.crt
state_dir = $AGENT_STATE
script_dirs = $AGENT_SCRIPTS
$trusted_line

# Name this agent pairs under (certificate CN, registry name). Default: the FQDN.
#hostname = web-01.example.com
# Listen address. Default 0.0.0.0; use :: for IPv4 and IPv6.
#bind = 0.0.0.0
# Accept connections only from these sources (IPv4, IPv6, CIDR), before TLS.
#allowed_ips = 192.0.2.10, 10.0.0.0/8, 2001:db8::/32
# Executable asked to authorise each request (exit 0 = allow).
#auth_hook = $AGENT_ETC/auth-hook
# Seconds before a script's process group is killed (scripts.conf timeout= wins).
#script_timeout = 600
# Bytes of stdout and of stderr returned per run; the rest is dropped and flagged.
#max_output_bytes = 1048576
# Log to syslog (facility daemon) instead of stderr.
#syslog = 1

# Scripts run through the privileged executor (ctrl-exec-exec, a root service
# on this unix socket), each under its [profile NAME] below: the agent stays
# unprivileged, and no script can rewrite the agent's config, state or job
# records. Comment this out to run scripts directly as $AGENT_USER.
executor_socket = $exec_socket

# Free-form labels returned to the dispatcher (ced list-agents --tags env=prod).
#[tags]
#env = prod
#role = web

# Profiles: who a script runs as (scripts.conf: name = /path profile=NAME).
# Every script without profile= uses [profile default].
#   run_as = user or uid   caps = CAP_NET_BIND_SERVICE,...   writable = /a:/b
#   no_new_privileges = yes (default; setuid programs, sudo included, gain nothing)
[profile default]
run_as = $AGENT_USER

# A script that needs root, e.g. to restart a service:
#[profile admin]
#run_as = root
#caps = CAP_KILL, CAP_SYS_ADMIN
EOF
    seed_file "$AGENT_ETC/scripts.conf" 0640 "root:$AGENT_USER" <<EOF
# ctrl-exec allowlist: the only scripts this agent will run.
#   name = /absolute/path [timeout=SECONDS] [profile=NAME]
# Names: letters, digits, '_' and '-'. Paths must be inside script_dirs
# ($AGENT_SCRIPTS). Reload the agent after editing.
#check-disk = $AGENT_SCRIPTS/check-disk.sh
#backup-mysql = $AGENT_SCRIPTS/backup-mysql.sh timeout=1800
EOF
    # Pairing makes the key 0640 root:$AGENT_USER; an older pairing may not have.
    if [ -f "$(d "$AGENT_ETC/agent.key")" ]; then
        set_owner "root:$AGENT_USER" "$(d "$AGENT_ETC/agent.key")"
        chmod 0640 "$(d "$AGENT_ETC/agent.key")"
        say "  $AGENT_ETC/agent.key set to 0640 root:$AGENT_USER"
    fi
    install_service "$init" ctrl-exec-agent
    # procd runs the executor as a second instance of the agent's script.
    if [ "$init" != procd ]; then install_service "$init" ctrl-exec-exec; fi
}

install_dispatcher() {
    init=$1
    say "Dispatcher:"
    ensure_account "$DISP_USER"
    make_dir "$DISP_ETC" 0750 "root:$DISP_USER"
    make_dir "$DISP_STATE" 0750 "root:$DISP_USER"
    for sub in pairing agents locks runs; do
        make_dir "$DISP_STATE/$sub" 2770 "root:$DISP_USER"
    done
    seed_file "$DISP_ETC/ctrl-exec.conf" 0640 "root:$DISP_USER" <<EOF
# ctrl-exec dispatcher and API configuration (see docs/INSTALL.md for every key).
# One 'key = value' per line; lines starting with '#' or a space are ignored;
# no inline comments.

cert = $DISP_ETC/ctrl-exec.crt
key = $DISP_ETC/ctrl-exec.key
ca = $DISP_ETC/ca.crt

# Where ca.key/ca.crt and the registry, pairing queue, locks and runs live.
#ca_dir = $DISP_ETC
#state_dir = $DISP_STATE

# Seconds to wait for an agent's reply; concurrent hosts per run.
#read_timeout = 60
#max_parallel = 64

# Pairing listener (ced pairing-mode).
#pairing_bind = 0.0.0.0

# API (ctrl-exec-api). Without an auth hook every API request is refused
# unless api_auth_default = allow.
#api_bind = 127.0.0.1
#api_port = 7445
#api_cert = $DISP_ETC/api.crt
#api_key = $DISP_ETC/api.key
api_auth_default = deny

# Executable asked to authorise each run/ping/API request (exit 0 = allow).
#auth_hook = $DISP_ETC/auth-hook
#auth_hook_timeout = 10

# Certificates (ced maintain, every 4 h): agent certificates last cert_days and
# are renewed past half of it; the dispatcher's lasts dispatcher_cert_days and
# is rotated when cert_renewal_days are left; the old serial stays trusted for
# cert_overlap_days while agents that were down are brought up to date.
#cert_days = 365
#dispatcher_cert_days = 825
#cert_renewal_days = 90
#cert_overlap_days = 30

# Log to syslog (facility daemon) instead of stderr.
#syslog = 1
EOF
    # The API runs as $DISP_USER and signs nothing, but needs the dispatcher
    # key: setup-ctrl-exec makes it 0640 root:$DISP_USER; an older one may not be.
    if [ -f "$(d "$DISP_ETC/ctrl-exec.key")" ]; then
        set_owner "root:$DISP_USER" "$(d "$DISP_ETC/ctrl-exec.key")"
        chmod 0640 "$(d "$DISP_ETC/ctrl-exec.key")"
        say "  $DISP_ETC/ctrl-exec.key set to 0640 root:$DISP_USER"
    fi
    install_maintenance "$init"
}

install_api() {
    init=$1
    say "API:"
    if [ "$init" = procd ]; then
        say "  no procd service for the API; run $BINDIR/ctrl-exec-api under your own supervisor"
    else
        install_service "$init" ctrl-exec-api
    fi
}

# ---------------------------------------------------------------------------
# Uninstall
# ---------------------------------------------------------------------------

stop_service() {
    name=$1
    if [ -n "$DESTDIR" ]; then return 0; fi
    if [ -f "/etc/systemd/system/$name.service" ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$name.service" >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$name" ]; then
        if command -v rc-service >/dev/null 2>&1; then
            rc-service "$name" stop >/dev/null 2>&1 || true
            rc-update del "$name" >/dev/null 2>&1 || true
        elif [ -f /etc/rc.common ]; then
            "/etc/init.d/$name" stop >/dev/null 2>&1 || true
            "/etc/init.d/$name" disable >/dev/null 2>&1 || true
        fi
    fi
}

uninstall() {
    say "Uninstalling ctrl-exec from $BINDIR"
    if [ -z "$DESTDIR" ] && [ -f /etc/systemd/system/ctrl-exec-maintenance.timer ] &&
        command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now ctrl-exec-maintenance.timer >/dev/null 2>&1 || true
    fi
    for f in /etc/systemd/system/ctrl-exec-maintenance.timer \
        /etc/systemd/system/ctrl-exec-maintenance.service; do
        if [ -f "$(d "$f")" ] && grep -q 'ctrl-exec' "$(d "$f")"; then
            rm -f "$(d "$f")" && say "  removed $f"
        fi
    done
    if [ -f "$(d /etc/crontabs/root)" ] && grep -q 'ctrl-exec-dispatcher maintain' "$(d /etc/crontabs/root)"; then
        say "  note: /etc/crontabs/root still runs 'ctrl-exec-dispatcher maintain'; remove that line"
    fi
    for name in ctrl-exec-agent ctrl-exec-exec ctrl-exec-api; do
        stop_service "$name"
        for f in "/etc/systemd/system/$name.service" "/etc/init.d/$name"; do
            if [ -f "$(d "$f")" ] && grep -q 'ctrl-exec' "$(d "$f")"; then
                rm -f "$(d "$f")" && say "  removed $f"
            fi
        done
    done
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
    for r in $ROLE_LINKS; do
        link=$(d "$BINDIR/$r")
        if [ -L "$link" ] && [ "$(readlink "$link")" = ctrl-exec ]; then
            rm -f "$link" && say "  removed $BINDIR/$r"
        fi
    done
    if [ -f "$(d "$BINDIR/ctrl-exec")" ]; then
        rm -f "$(d "$BINDIR/ctrl-exec")" && say "  removed $BINDIR/ctrl-exec"
    fi
    kept=
    for p in $AGENT_ETC $AGENT_STATE $AGENT_SCRIPTS $DISP_ETC $DISP_STATE; do
        if [ -e "$(d "$p")" ]; then kept="$kept $p"; fi
    done
    users=
    for u in $AGENT_USER $DISP_USER; do
        if grep -q "^$u:" "$(d /etc/passwd)" 2>/dev/null; then users="$users $u"; fi
    done
    if [ -n "$kept" ] || [ -n "$users" ]; then
        say ""
        say "Kept (configuration, certificates, CA, registry, scripts, state):"
        for p in $kept; do say "  $p"; done
        if [ -n "$users" ]; then say "  users/groups:$users"; fi
        say ""
        say "To remove them for good (this destroys the CA and every pairing):"
        if [ -n "$kept" ]; then say "  rm -rf$kept"; fi
        for u in $users; do
            say "  userdel $u; groupdel $u   # busybox: deluser $u; delgroup $u"
        done
    fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

if [ "$DO_UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi

# Checks that need nothing installed, before changing anything.
if [ "$DO_API" = 1 ] && [ "$DO_DISPATCHER" = 0 ]; then
    [ -f "$(d "$DISP_ETC/ctrl-exec.conf")" ] ||
        die "$DISP_ETC/ctrl-exec.conf not found: install the dispatcher first (--dispatcher)"
    if [ -z "$DESTDIR" ] && ! grep -q "^$DISP_USER:" /etc/passwd; then
        die "user $DISP_USER not found: install the dispatcher first (--dispatcher)"
    fi
fi
find_binary >/dev/null
INIT_KIND=$(detect_init)
say "Installing ctrl-exec into $BINDIR (init: $INIT_KIND${DESTDIR:+, DESTDIR=$DESTDIR})"
install_binary
if [ "$DO_DISPATCHER" = 1 ]; then install_dispatcher "$INIT_KIND"; fi
if [ "$DO_API" = 1 ]; then install_api "$INIT_KIND"; fi
if [ "$DO_AGENT" = 1 ]; then install_agent "$INIT_KIND"; fi

CED=$(run_cmd ced)
CEA=$(run_cmd cea)
say ""
say "Done. Next steps:"
if [ "$DO_DISPATCHER" = 1 ]; then
    cat <<EOF

On this dispatcher:
  $CED setup-ca            # creates the CA; note the fingerprint it prints
  $CED setup-ctrl-exec     # the dispatcher's own certificate
  $CED pairing-mode        # accept pairing requests on port 7444 (a/d/s per request)
EOF
    if [ "$INIT_KIND" = systemd ]; then
        say "  systemctl enable --now ctrl-exec-maintenance.timer   # renewal and rotation every 4 h"
    else
        say "  cat $DISP_ETC/ctrl-exec-maintenance.crontab >> /etc/crontabs/root   # renewal and rotation every 4 h"
    fi
fi
if [ "$DO_API" = 1 ]; then
    case $INIT_KIND in
        systemd) start="systemctl enable --now ctrl-exec-api" ;;
        openrc) start="rc-update add ctrl-exec-api default && rc-service ctrl-exec-api start" ;;
        *) start="$BINDIR/ctrl-exec-api" ;;
    esac
    cat <<EOF

API (after setup-ctrl-exec; set auth_hook or api_auth_default in $DISP_ETC/ctrl-exec.conf):
  $BINDIR/ctrl-exec-api --check   # loads config, key and certificates; names what is wrong
  $start
EOF
fi
if [ "$DO_AGENT" = 1 ]; then
    case $INIT_KIND in
        systemd) start="systemctl enable --now ctrl-exec-exec ctrl-exec-agent" ;;
        openrc) start="rc-update add ctrl-exec-exec default && rc-update add ctrl-exec-agent default && rc-service ctrl-exec-agent start" ;;
        procd) start="/etc/init.d/ctrl-exec-agent enable && /etc/init.d/ctrl-exec-agent start" ;;
        *) start="$BINDIR/ctrl-exec-exec serve $exec_socket $AGENT_ETC/agent.conf $AGENT_ETC/scripts.conf $AGENT_USER   # as root, then
       $BINDIR/ctrl-exec-agent serve   # as user $AGENT_USER, both under your supervisor" ;;
    esac
    cat <<EOF

On this agent:
  1. Allowlist scripts in $AGENT_ETC/scripts.conf (scripts in $AGENT_SCRIPTS).
  2. Pair (the dispatcher must be in pairing mode):
       $CEA request-pairing --dispatcher <dispatcher-host> --ca-fingerprint sha256:<from setup-ca>
     Compare the 6-digit code with the dispatcher's before it is approved.
  3. Check that the service can start (names any file it cannot read, and the fix):
       $CEA check-start --user $AGENT_USER
  4. Start it:
       $start
EOF
    if [ "$INIT_KIND" = procd ]; then
        cat <<EOF
  5. Open port 7443 to the dispatcher, e.g.:
       uci add firewall rule; uci set firewall.@rule[-1].name=ctrl-exec-agent
       uci set firewall.@rule[-1].src=wan; uci set firewall.@rule[-1].proto=tcp
       uci set firewall.@rule[-1].dest_port=7443; uci set firewall.@rule[-1].target=ACCEPT
       uci commit firewall; /etc/init.d/firewall reload
EOF
    fi
fi
