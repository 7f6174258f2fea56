#!/usr/bin/env bash
# The operations page under a real systemd: boots a Debian root file system with
# systemd-nspawn (private network, a throw-away overlay over the cached tree), installs the
# server with deploy/install.sh from a read-only view of this checkout, and walks the page:
# enable, start, status, requests, rotation, reload, a killed web tier, stop, a schema
# mismatch. Every command the page shows is printed with its output, as the page quotes it.
#
# Usage: tests/systemd/run.sh BINARY [TRANSCRIPT]
#   BINARY      the panda-server to install (a debug build is fine)
#   TRANSCRIPT  where the commands and their outputs go (default: standard output)
# Environment: PANDA_SYSTEMD_ROOTFS, the cached tree (default ~/.cache/panda-server-ci-rootfs).
# Needs root, systemd-nspawn (systemd-container), nsenter, and debootstrap for the first run.
set -euo pipefail

BINARY=$(realpath "${1:?usage: run.sh BINARY [TRANSCRIPT]}")
TRANSCRIPT=${2:-/dev/stdout}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ROOTFS=${PANDA_SYSTEMD_ROOTFS:-${HOME:-/root}/.cache/panda-server-ci-rootfs}
MACHINE=panda-test-$$
WORK=$(mktemp -d)
NSPAWN_PID=

fail() {
    echo "FAILED: $*" >&2
    if [ -n "${LEADER:-}" ]; then
        echo "--- journal of the panda units ---" >&2
        inside journalctl --no-pager -n 80 -u panda.service -u panda_httpd.service \
            -u panda_daemon.service >&2 || true
    fi
    exit 1
}

cleanup() {
    if [ -n "${LEADER:-}" ]; then
        nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1 || true
    fi
    if [ -n "$NSPAWN_PID" ]; then
        for _ in $(seq 1 100); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

inside() { nsenter -t "$LEADER" -a "$@"; }

# Runs a command inside, prints it and its output to the transcript, and keeps the output in
# $OUT and the exit code in $RC for the checks that follow.
step() {
    set +e
    OUT=$(inside "$@" 2>&1)
    RC=$?
    set -e
    {
        echo "# ${LABEL:-$*}"
        [ -n "$OUT" ] && echo "$OUT"
        [ "$RC" = 0 ] || echo "(exit $RC)"
        echo
    } >> "$TRANSCRIPT"
}

# Like step, for a shell line (pipes, redirections) run inside.
step_sh() { LABEL=$1 step sh -c "$1"; }

expect_ok() { [ "$RC" = 0 ] || fail "$1 (exit $RC): $OUT"; }
expect_in_output() { grep -qF -- "$1" <<<"$OUT" || fail "expected '$1' in: $OUT"; }

# Polls a shell condition inside the machine every 0.2 s for at most $2 seconds.
wait_for() {
    local condition=$1 seconds=$2
    for _ in $(seq 1 $((seconds * 5))); do
        inside sh -c "$condition" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "not within ${seconds}s: $condition"
}

main_pid() { inside systemctl show -p MainPID --value "$1"; }
status_text() { inside systemctl show -p StatusText --value "$1"; }

[ "$TRANSCRIPT" = /dev/stdout ] || : > "$TRANSCRIPT"

# --- boot ----------------------------------------------------------------------------------
"$SRC/scripts/systemd-rootfs.sh" "$ROOTFS" >/dev/null
systemd-nspawn --quiet --register=no --keep-unit --private-network --volatile=overlay \
    --console=passive -D "$ROOTFS" -M "$MACHINE" \
    --bind-ro="$SRC:/src" --bind-ro="$BINARY:/build/panda-server" -b \
    >"$WORK/console" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 1 100); do
    LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
    [ -n "$LEADER" ] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$WORK/console" >&2; LEADER=; fail "systemd-nspawn exited"; }
    sleep 0.1
done
[ -n "$LEADER" ] || fail "no systemd inside the container"
for _ in $(seq 1 150); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.2
done
case $state in running | degraded) ;; *) fail "the machine did not boot: $state" ;; esac

# --- install -------------------------------------------------------------------------------
# From the read-only checkout: install.sh must write nothing into the source tree.
step /src/deploy/install.sh /build/panda-server
expect_ok "install.sh"
step_sh "stat -c '%U:%G %a %n' /etc/panda /etc/panda/panda_server.cfg /etc/panda/dbpasswd /etc/panda/queues.json"
expect_in_output "root:panda 640 /etc/panda/panda_server.cfg"
step runuser -u panda -- sh -c "echo '# edit' >> /etc/panda/panda_server.cfg"
[ "$RC" != 0 ] || fail "the service user can rewrite its configuration"

# The one departure from the shipped configuration: the container has no PostgreSQL, so the
# database is an SQLite file under PANDA_HOME.
inside sed -i -e 's/^backend = postgres/backend = sqlite/' \
    -e 's|^dbname = panda_db|dbname = /var/lib/panda/panda.db|' /etc/panda/panda_server.cfg
step runuser -u panda -- /opt/panda/bin/panda-server schema migrate
expect_ok "schema migrate"
step runuser -u panda -- /opt/panda/bin/panda-server queues load /etc/panda/queues.json
expect_ok "queues load"

# --- enable and start ----------------------------------------------------------------------
step systemctl daemon-reload
# The short form: the parent alone, enabled and started at once, brings up both children.
step systemctl enable --now panda.service
expect_ok "enable --now panda.service"
wait_for "systemctl is-active -q panda_httpd.service && systemctl is-active -q panda_daemon.service" 30
inside systemctl disable --now panda.service >/dev/null 2>&1
wait_for "! systemctl is-active -q panda_httpd.service && ! systemctl is-active -q panda_daemon.service" 30
# The page's form: all three enabled once.
step systemctl enable panda.service panda_httpd.service panda_daemon.service
expect_ok "enable"
step systemctl start panda.service
expect_ok "start panda.service"
wait_for "systemctl is-active -q panda_httpd.service && systemctl is-active -q panda_daemon.service" 30
step systemctl status --no-pager panda.service
expect_in_output "DB schema check: OK"
expect_in_output "active (exited)"

# --- status lines --------------------------------------------------------------------------
wait_for "systemctl show -p StatusText --value panda_httpd.service | grep -q 'Total requests'" 15
step systemctl status --no-pager panda_httpd.service
expect_in_output 'Status: "Total requests: '
before=$(status_text panda_httpd.service)
step curl -sS http://127.0.0.1:25080/server/panda/isAlive
expect_in_output "alive=yes"
inside sh -c 'for i in $(seq 1 20); do curl -s -o /dev/null http://127.0.0.1:25080/api/v1/system/is_alive; done'
wait_for "systemctl show -p StatusText --value panda_httpd.service | grep -qv '$before'" 15
step systemctl status --no-pager panda_httpd.service
wait_for "systemctl show -p StatusText --value panda_daemon.service | grep -q 'Tasks:'" 15
step systemctl status --no-pager panda_daemon.service
expect_in_output 'Status: "Tasks: '
step_sh "curl -sS http://127.0.0.1:25090/metrics | grep -c '^panda_' && curl -sS http://127.0.0.1:25091/metrics | grep -m1 '^panda_daemon'"
expect_ok "metrics of both children"
step runuser -u panda -- /opt/panda/bin/panda-server status
expect_ok "panda-server status"
expect_in_output "DB schema check: OK"
expect_in_output "web tier on this node: alive"
# The daemon signs its leases with the node's name, though the sandbox hides /proc/sys.
expect_in_output "copyArchive  panda-test:"
step /opt/panda/bin/panda-server --version
# A start-up error is in the error log, not only in the journal: a second web tier finds the
# port taken.
step runuser -u panda -- /opt/panda/bin/panda-server httpd
[ "$RC" != 0 ] || fail "a second web tier started on a port in use"
step_sh "tail -n 1 /var/log/panda/panda_server_error_log"
expect_in_output "cannot listen on 0.0.0.0:25080 (HTTP): Address already in use"
step_sh "ls -l /var/log/panda"

# --- logs: rotation and reopen -------------------------------------------------------------
step logrotate -f /etc/logrotate.d/panda_server
expect_ok "logrotate -f"
inside curl -s -o /dev/null "http://127.0.0.1:25080/server/panda/isAlive?after=rotation"
wait_for "grep -q 'after=rotation' /var/log/panda/panda_server_access_log" 10
step_sh "ls /var/log/panda; grep -c 'after=rotation' /var/log/panda/panda_server_access_log.1 || true"
expect_in_output "panda_server_access_log.1"
expect_in_output "0"
step systemctl start logrotate.service
expect_ok "logrotate.service"
inside mv /var/log/panda/panda_server_access_log /var/log/panda/moved_away
step systemctl reload panda_httpd.service panda_daemon.service
expect_ok "reload"
inside curl -s -o /dev/null "http://127.0.0.1:25080/server/panda/isAlive?after=reload"
wait_for "grep -q 'after=reload' /var/log/panda/panda_server_access_log" 10
inside rm -f /var/log/panda/moved_away

# --- a killed web tier comes back ----------------------------------------------------------
old=$(main_pid panda_httpd.service)
step kill -9 "$old"
wait_for "[ \"\$(systemctl show -p MainPID --value panda_httpd.service)\" != $old ] && systemctl is-active -q panda_httpd.service" 30
step_sh "systemctl show -p NRestarts panda_httpd.service; curl -sS http://127.0.0.1:25080/server/panda/isAlive"
expect_in_output "alive=yes"

# --- a frozen web tier is restarted by the watchdog (60 s in the unit; 2 s here) -----------
inside mkdir -p /etc/systemd/system/panda_httpd.service.d
inside sh -c 'printf "[Service]\nWatchdogSec=2\n" > /etc/systemd/system/panda_httpd.service.d/watchdog.conf'
inside systemctl daemon-reload
inside systemctl restart panda_httpd.service
old=$(main_pid panda_httpd.service)
step kill -STOP "$old"
wait_for "[ \"\$(systemctl show -p MainPID --value panda_httpd.service)\" != $old ] && systemctl is-active -q panda_httpd.service" 30
step_sh "journalctl --no-pager -u panda_httpd.service | grep -m1 'Watchdog timeout'"
expect_in_output "Watchdog timeout"
inside rm -r /etc/systemd/system/panda_httpd.service.d
inside systemctl daemon-reload

# --- stop and start the parent -------------------------------------------------------------
step systemctl stop panda.service
expect_ok "stop"
step systemctl is-active panda.service panda_httpd.service panda_daemon.service
[ "$(grep -c '^inactive' <<<"$OUT")" = 3 ] || fail "stop left something running: $OUT"
step systemctl start panda.service
wait_for "systemctl is-active -q panda_httpd.service && systemctl is-active -q panda_daemon.service" 30

# --- a schema mismatch holds the children --------------------------------------------------
inside systemctl stop panda.service
step sqlite3 /var/lib/panda/panda.db "UPDATE pandadb_version SET major = major + 1 WHERE component = 'PanDA'"
step systemctl start panda.service
[ "$RC" != 0 ] || fail "panda.service started on a database of another schema version"
step systemctl status --no-pager panda.service
expect_in_output "DB schema check: FAILED"
step systemctl is-active panda_httpd.service panda_daemon.service
[ "$(grep -c '^inactive' <<<"$OUT")" = 2 ] || fail "a child ran despite the schema mismatch: $OUT"
inside sqlite3 /var/lib/panda/panda.db "UPDATE pandadb_version SET major = major - 1 WHERE component = 'PanDA'"
inside systemctl reset-failed panda.service
step systemctl start panda.service
expect_ok "start after the schema was fixed"
wait_for "systemctl is-active -q panda_httpd.service && systemctl is-active -q panda_daemon.service" 30

# --- the sandbox ---------------------------------------------------------------------------
for unit in panda.service panda_httpd.service panda_daemon.service; do
    step_sh "systemd-analyze security $unit | tail -n 1"
done

echo "all systemd checks passed" >> "$TRANSCRIPT"
