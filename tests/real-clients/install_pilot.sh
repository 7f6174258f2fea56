#!/usr/bin/env bash
# Fetch and unpack the PyPI panda-pilot sdist (pilot3 3.7.0.36, stdlib-only) so that
# integration tests can run the real pilot.
#
# Usage: install_pilot.sh [DIR]
#   DIR defaults to ${PANDA_CLIENTS_DIR:-$HOME/.cache/panda-server-clients}
# Last line on stdout: absolute path of the unpacked tree (the directory holding pilot.py).
# Idempotent: an already unpacked tree is reused without touching the network.
# Env: PIP (pip command, default "python3 -m pip").
set -euo pipefail

VERSION=3.7.0.36
NAME=panda-pilot-$VERSION
DEST=${1:-${PANDA_CLIENTS_DIR:-$HOME/.cache/panda-server-clients}}

die() { echo "install_pilot.sh: $*" >&2; exit 1; }

mkdir -p "$DEST" || die "cannot create directory $DEST"
DEST=$(cd "$DEST" && pwd)
TREE=$DEST/$NAME

if [ -f "$TREE/pilot.py" ] && [ -d "$TREE/pilot" ]; then
    echo "$TREE"
    exit 0
fi

read -r -a PIPCMD <<< "${PIP:-python3 -m pip}"
"${PIPCMD[@]}" --version >/dev/null 2>&1 || die "pip not available (tried: ${PIPCMD[*]}); set PIP"

TARBALL=""
for cand in "$DEST/$NAME.tar.gz" "$DEST/panda_pilot-$VERSION.tar.gz"; do
    [ -s "$cand" ] && TARBALL=$cand && break
done
if [ -z "$TARBALL" ]; then
    echo "install_pilot.sh: downloading panda-pilot==$VERSION from PyPI into $DEST" >&2
    "${PIPCMD[@]}" download --quiet --no-deps --no-binary :all: "panda-pilot==$VERSION" -d "$DEST" >&2 \
        || die "pip download of panda-pilot==$VERSION failed (no network / PyPI unreachable?)"
    for cand in "$DEST/$NAME.tar.gz" "$DEST/panda_pilot-$VERSION.tar.gz"; do
        [ -s "$cand" ] && TARBALL=$cand && break
    done
    [ -n "$TARBALL" ] || die "pip download succeeded but no sdist tarball for $VERSION found in $DEST"
fi

# unpack into a temporary dir first, then move into place, so an interrupted run leaves no half tree
TMP=$(mktemp -d "$DEST/.unpack.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
tar xzf "$TARBALL" -C "$TMP" || die "cannot unpack $TARBALL"
SRC=$(dirname "$(find "$TMP" -maxdepth 2 -name pilot.py -type f | head -n 1)")
[ -f "$SRC/pilot.py" ] || die "no pilot.py in $TARBALL"
rm -rf "$TREE"
mv "$SRC" "$TREE" || die "cannot move unpacked tree to $TREE"
[ -f "$TREE/pilot.py" ] || die "pilot.py missing after unpacking"
echo "$TREE"
