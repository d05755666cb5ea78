#!/bin/sh
# Builds the Debian packages from one ctrl-exec binary with dpkg-deb:
#
#   ctrl-exec             the binary, its role links and the man pages
#   ctrl-exec-agent       agent host: user, directories, seed configs, the
#                         agent and executor units (depends on ctrl-exec)
#   ctrl-exec-dispatcher  dispatcher host: user, directories, seed config,
#                         the API unit and the maintenance timer
#
# One binary package plus role packages: an agent host gets no dispatcher
# user, state or units, and a host with both roles carries the binary once.
# The role trees are staged by scripts/install.sh (DESTDIR, --prefix /usr),
# so the packages lay down exactly what the installer does; seed configs go
# to /usr/share/<package>/ and the maintainer scripts copy them into /etc
# only when absent, so an upgrade never overwrites a config or a key.
#
#   sh scripts/deb.sh BINARY [ARCH] [OUTDIR]     (make deb does this)
#
# ARCH is the Debian architecture (default: from the binary: amd64, arm64).
set -eu
BIN=${1:?usage: deb.sh BINARY [ARCH] [OUTDIR]}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${3:-$HERE/target/deb}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$HERE/Cargo.toml" | head -n 1)
if [ -n "${2:-}" ]; then
    ARCH=$2
else
    case $(od -An -tx1 -j18 -N1 "$BIN" | tr -d ' ') in
        3e) ARCH=amd64 ;;
        b7) ARCH=arm64 ;;
        *) echo "deb.sh: cannot tell the architecture of $BIN; pass it" >&2; exit 1 ;;
    esac
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# control NAME DESCRIPTION [DEPENDS]: DEBIAN/control for package NAME.
control() {
    size=$(du -sk "$WORK/$1" | cut -f1)
    mkdir -p "$WORK/$1/DEBIAN"
    {
        echo "Package: $1"
        echo "Version: $VERSION"
        echo "Architecture: $ARCH"
        echo "Maintainer: ctrl-exec maintainers <ctrl-exec@localhost>"
        echo "Installed-Size: $size"
        [ -z "${3:-}" ] || echo "Depends: $3"
        echo "Section: admin"
        echo "Priority: optional"
        echo "Description: $2"
        echo " ctrl-exec runs allowlisted scripts on a fleet of agent hosts over HTTPS"
        echo " with mutual TLS: no SSH, no shell. One static binary for every role."
    } >"$WORK/$1/DEBIAN/control"
}

# maintainer NAME: copies packaging/deb/NAME.{postinst,prerm,postrm}.
maintainer() {
    mkdir -p "$WORK/$1/DEBIAN"
    for s in postinst prerm postrm; do
        if [ -f "$HERE/packaging/deb/$1.$s" ]; then
            install -m 0755 "$HERE/packaging/deb/$1.$s" "$WORK/$1/DEBIAN/$s"
        fi
    done
}

build() {
    dpkg-deb --root-owner-group --build "$WORK/$1" "$OUT/${1}_${VERSION}_${ARCH}.deb" >/dev/null
    echo "$OUT/${1}_${VERSION}_${ARCH}.deb $(stat -c %s "$OUT/${1}_${VERSION}_${ARCH}.deb") bytes"
}

# --- ctrl-exec: the binary, links, man pages --------------------------------
P=$WORK/ctrl-exec
install -d "$P/usr/bin" "$P/usr/share/doc/ctrl-exec"
install -m 0755 "$BIN" "$P/usr/bin/ctrl-exec"
for r in ced ctrl-exec-dispatcher cea ctrl-exec-agent ctrl-exec-api ctrl-exec-exec; do
    ln -s ctrl-exec "$P/usr/bin/$r"
done
for page in "$HERE"/man/*.[158]; do
    [ -f "$page" ] || continue
    sect=${page##*.}
    install -d "$P/usr/share/man/man$sect"
    gzip -9n <"$page" >"$P/usr/share/man/man$sect/$(basename "$page").gz"
done
install -m 0644 "$HERE/LICENCE" "$P/usr/share/doc/ctrl-exec/copyright"
control ctrl-exec "remote script execution over mutual TLS (binary)"
build ctrl-exec

# stage ROLE-FLAGS PACKAGE: install.sh's tree for a role, units moved to
# /usr/lib/systemd/system and seed configs to /usr/share/PACKAGE.
stage() {
    P=$WORK/$2
    DESTDIR=$P sh "$HERE/scripts/install.sh" $1 --prefix /usr --init systemd --binary "$BIN" >/dev/null
    rm -rf "$P/usr/bin"
    install -d "$P/usr/lib/systemd/system" "$P/usr/share/$2"
    mv "$P"/etc/systemd/system/* "$P/usr/lib/systemd/system/"
    rm -rf "$P/etc/systemd"
    find "$P/etc" -type f -name '*.conf' | while read -r f; do
        install -m 0644 "$f" "$P/usr/share/$2/"
    done
    [ ! -f "$P/etc/ctrl-exec/ctrl-exec-maintenance.crontab" ] ||
        mv "$P/etc/ctrl-exec/ctrl-exec-maintenance.crontab" "$P/usr/share/$2/"
    # Directories, owners and modes are the maintainer scripts' work.
    rm -rf "$P/etc" "$P/var" "$P/opt"
    maintainer "$2"
}

stage --agent ctrl-exec-agent
control ctrl-exec-agent "remote script execution over mutual TLS (agent)" "ctrl-exec (= $VERSION), passwd"
build ctrl-exec-agent

stage "--dispatcher --api" ctrl-exec-dispatcher
control ctrl-exec-dispatcher "remote script execution over mutual TLS (dispatcher and API)" "ctrl-exec (= $VERSION), passwd"
build ctrl-exec-dispatcher
