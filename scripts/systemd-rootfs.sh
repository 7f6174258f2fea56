#!/usr/bin/env bash
# Makes (once) the Debian root file system the real-systemd test boots with systemd-nspawn:
# systemd, logrotate on its timer, OpenSSL's library for the server binary, curl for requests.
# The tree is built beside its final place and renamed into it only when complete, so an
# interrupted run leaves nothing that looks usable; a complete tree is reused as it is.
#
# Usage: scripts/systemd-rootfs.sh DIR      (prints DIR when it is ready)
# Needs: root, debootstrap, and Debian's mirror (DEBIAN_MIRROR, default deb.debian.org).
set -euo pipefail

DIR=${1:?usage: systemd-rootfs.sh DIR}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump when the package list changes, so cached trees of an older list are rebuilt.
LAYOUT=1
PACKAGES=systemd,systemd-sysv,dbus,logrotate,libssl3,ca-certificates,curl,procps,sqlite3

if [ "$(cat "$DIR/.panda-rootfs" 2>/dev/null)" = "$LAYOUT $SUITE $PACKAGES" ]; then
    echo "$DIR"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "systemd-rootfs.sh: debootstrap is not installed" >&2; exit 1; }

parent=$(dirname "$DIR")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work" "$MIRROR" >&2
# A machine with no login prompt and no network wait: the test drives it with nsenter.
chroot "$work" systemctl mask console-getty.service getty.target systemd-networkd-wait-online.service >/dev/null 2>&1 || true
echo "panda-test" > "$work/etc/hostname"
rm -f "$work/var/cache/apt/archives/"*.deb
echo "$LAYOUT $SUITE $PACKAGES" > "$work/.panda-rootfs"
rm -rf "$DIR"
mv "$work" "$DIR"
trap - EXIT
echo "$DIR"
