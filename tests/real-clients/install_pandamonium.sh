#!/usr/bin/env bash
# Installs the real pandamonium (PyPI pandamonium 0.3.1, a user's script over BigPanDA's JSON)
# into a virtualenv, once, and prints the virtualenv's bin directory as its last line.
# Usage: install_pandamonium.sh [DIR]   (default ${PANDA_CLIENTS_DIR:-$HOME/.cache/panda-server-clients})
set -euo pipefail
VERSION=0.3.1
DIR=${1:-${PANDA_CLIENTS_DIR:-$HOME/.cache/panda-server-clients}}
VENV=$DIR/pandamonium-$VERSION
PY=${PYTHON:-python3}
installed() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import pandamonium.pandamon" >/dev/null 2>&1; }
if installed; then
    echo "$VENV/bin"
    exit 0
fi
mkdir -p "$DIR"
exec 9>"$DIR/.pandamonium-$VERSION.lock"
flock 9
if installed; then
    echo "$VENV/bin"
    exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV" || { echo "install_pandamonium.sh: cannot create a virtualenv with $PY" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q "pandamonium==$VERSION" \
    || { rm -rf "$VENV"; echo "install_pandamonium.sh: pip install pandamonium==$VERSION failed" >&2; exit 1; }
echo "$VENV/bin"
