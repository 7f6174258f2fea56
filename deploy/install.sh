#!/usr/bin/env bash
# Installs a built panda-server and everything around it, as upstream's layout has it:
#   /opt/panda/bin/panda-server; /etc/panda/panda_server.cfg, /etc/panda/dbpasswd and
#   /etc/panda/queues.json (each kept if present; readable, not writable, by the service user);
#   /etc/sysconfig/panda_server_env (kept if present); the systemd units; the logrotate file;
#   /var/log/panda (logs), /var/log/panda/pandacache (cache_dir), /var/trf, /var/lib/panda.
# It writes nothing into the source tree, so it runs from a read-only checkout.
#
# Usage: deploy/install.sh [BINARY]          (default: target/release/panda-server)
# Environment: DESTDIR (staging root, default none), PREFIX (/opt/panda),
#              PANDA_USER / PANDA_GROUP (panda / panda; created when installing for real as root),
#              SYSTEMD_UNIT_DIR (/etc/systemd/system).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BINARY=${1:-$HERE/../target/release/panda-server}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/panda}
PANDA_USER=${PANDA_USER:-panda}
PANDA_GROUP=${PANDA_GROUP:-$PANDA_USER}
UNIT_DIR=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}

die() { echo "install.sh: $*" >&2; exit 1; }
[ -x "$BINARY" ] || die "no executable at $BINARY (build it: cargo build --release)"

if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && ! id -u "$PANDA_USER" >/dev/null 2>&1; then
    groupadd --system "$PANDA_GROUP" 2>/dev/null || true
    useradd --system --gid "$PANDA_GROUP" --home-dir /var/lib/panda --shell /usr/sbin/nologin "$PANDA_USER"
fi
own() { # the service user's own directories
    if id -u "$PANDA_USER" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        chown "$PANDA_USER:$PANDA_GROUP" "$@"
    fi
}
readable_by_service() { # root's file, readable by the service group: it must not rewrite it
    if getent group "$PANDA_GROUP" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        chown "root:$PANDA_GROUP" "$@"
    fi
}
keep_or_install() { # install $1 as $2 with mode $3 unless $2 exists; $4 = service: group-readable
    if [ -e "$2" ]; then
        echo "kept existing $2"
        return
    fi
    install -D -m "$3" "$1" "$2"
    if [ "${4:-}" = service ]; then
        readable_by_service "$2"
    fi
}
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT

install -D -m 755 "$BINARY" "$DESTDIR$PREFIX/bin/panda-server"
install -D -m 644 "$HERE/../docs/OPERATIONS.md" "$DESTDIR$PREFIX/share/doc/OPERATIONS.md"
install -D -m 644 "$HERE/queues.example.json" "$DESTDIR$PREFIX/share/queues.example.json"
if [ ! -d "$DESTDIR/etc/panda" ]; then
    install -d -m 750 "$DESTDIR/etc/panda"
    readable_by_service "$DESTDIR/etc/panda"
fi
keep_or_install "$HERE/panda_server.cfg.example" "$DESTDIR/etc/panda/panda_server.cfg" 640 service
keep_or_install "$HERE/queues.example.json" "$DESTDIR/etc/panda/queues.json" 640 service
# The configuration names this file; empty means no password (PostgreSQL's trust or peer).
: > "$staging/dbpasswd"
keep_or_install "$staging/dbpasswd" "$DESTDIR/etc/panda/dbpasswd" 640 service
keep_or_install "$HERE/sysconfig/panda_server_env" "$DESTDIR/etc/sysconfig/panda_server_env" 644
for unit in panda.service panda_httpd.service panda_daemon.service; do
    sed -e "s|/opt/panda|$PREFIX|g" -e "s|^User=panda|User=$PANDA_USER|" -e "s|^Group=panda|Group=$PANDA_GROUP|" \
        "$HERE/systemd/$unit" > "$staging/$unit"
    install -D -m 644 "$staging/$unit" "$DESTDIR$UNIT_DIR/$unit"
done
install -D -m 644 "$HERE/logrotate/panda_server" "$DESTDIR/etc/logrotate.d/panda_server"
for dir in /var/log/panda /var/log/panda/pandacache /var/trf /var/lib/panda; do
    install -d -m 755 "$DESTDIR$dir"
    own "$DESTDIR$dir"
done
# The user transformations workers fetch from /trf/user/ (runGen for prun's tasks); root's,
# readable by all, so the service cannot change what every job runs.
for trf in "$HERE"/trf/user/*; do
    install -D -m 755 "$trf" "$DESTDIR/var/trf/user/$(basename "$trf")"
done

echo "installed panda-server into ${DESTDIR:-/} (prefix $PREFIX)"
if [ -z "$DESTDIR" ]; then
    echo "next: edit /etc/panda/panda_server.cfg (and the password in /etc/panda/dbpasswd), then see"
    echo "      $PREFIX/share/doc/OPERATIONS.md: schema migrate, queues load, the three systemctl enables"
fi
