#!/usr/bin/env bash
# Installs the real panda-client (PyPI panda-client 2.2.0) into a virtualenv, once, and prints
# the virtualenv's python as its last line.
# Usage: install_pandaclient.sh [DIR]   (default ${PANDA_CLIENTS_DIR:-$HOME/.cache/panda-server-clients})
set -euo pipefail
VERSION=2.2.0
DIR=${1:-${PANDA_CLIENTS_DIR:-$HOME/.cache/panda-server-clients}}
VENV=$DIR/pandaclient-$VERSION
PY=${PYTHON:-python3}
# Importing pandaclient.Client looks up the cache host unless told it is behind a balancer.
installed() {
    [ -x "$VENV/bin/python" ] &&
        PANDA_BEHIND_REAL_LB=1 PANDACACHE_URL=http://127.0.0.1 PANDA_URL_SSL=http://127.0.0.1 \
            "$VENV/bin/python" -c "import pandaclient.Client" >/dev/null 2>&1
}
if installed; then
    echo "$VENV/bin/python"
    exit 0
fi
mkdir -p "$DIR"
# Tests install concurrently: one installs, the others wait and reuse it.
exec 9>"$DIR/.pandaclient-$VERSION.lock"
flock 9
if installed; then
    echo "$VENV/bin/python"
    exit 0
fi
rm -rf "$VENV.tmp"
"$PY" -m venv "$VENV.tmp" || { echo "install_pandaclient.sh: cannot create a virtualenv with $PY" >&2; exit 1; }
"$VENV.tmp/bin/python" -m pip install -q "panda-client==$VERSION" \
    || { echo "install_pandaclient.sh: pip install panda-client==$VERSION failed" >&2; exit 1; }
rm -rf "$VENV"
mv "$VENV.tmp" "$VENV"
# The venv's scripts name the temporary path; the library imports do not depend on it.
echo "$VENV/bin/python"
