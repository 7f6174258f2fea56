#!/usr/bin/env bash
# Run ONE real PanDA pilot (PyPI panda-pilot 3.7.0.36, see install_pilot.sh) against a
# PanDA server on loopback, for one job, and exit with the pilot's exit code.
#
# Required environment:
#   PANDA_SERVER_URL  base URL of the server, e.g. http://127.0.0.1:25080 (path is ignored)
#   PILOT_QUEUE       PanDA queue name (must equal "nickname" in the served queuedata)
#   PILOT_LABEL       prodSourceLabel the pilot asks for (-j), e.g. ptest
#   PILOT_WORKDIR     scratch directory (created if missing); pilot.out lands here
#   PILOT_DIR         unpacked pilot tree (the directory holding pilot.py)
# Optional:
#   PILOT_TIMEOUT         seconds before the pilot is stopped (default 300)
#   PILOT_QUEUEDATA_URL   queuedata source (URL or file path; "{pandaqueue}" is substituted),
#                         default $PANDA_SERVER_URL/cache/schedconfig/{pandaqueue}.all.json
#   PILOT_STORAGEDATA_URL DDM endpoints source (URL or file path),
#                         default $PANDA_SERVER_URL/cache/ddmendpoints.json
#   PILOT_PYTHON          interpreter (default python3)
#   PILOT_EXTRA_ARGS      extra pilot.py options (word-split)
#   PILOT_USER_PLUGIN     the pilot's user plugin (--pilot-user), default generic; atlas is the
#                         one that downloads a user proxy on unified queues (getProxy)
#   PILOT_X509_PROXY      the pilot's own proxy file (default: a throwaway self-signed one)
#   PILOT_VERIFY_PROXY    1: let the pilot verify (and, for user jobs on unified queues,
#                         replace) its proxy; by default it runs with -t (no verification)
#   PILOT_TOKEN_FILE      authenticate with this OIDC token file (no trailing newline) instead
#                         of the throwaway certificate; PILOT_TOKEN_ORIGIN is its Origin
#                         (e.g. atlas.pilot)
#   X509_CERT_DIR         CA directory the pilot's curl verifies an https server against
#   PILOT_HEARTBEAT       seconds between the pilot's heartbeats (its default is 1800); the
#                         pilot learns of a kill only on a heartbeat
#   PILOT_TRF_PROXY       an HTTP proxy URL for the pilot's transformation download: the
#                         pilot then fetches the job's real transformation (pilot 3.7 only
#                         accepts http://pandaserver-doma.cern.ch:25080/trf/user/...; point
#                         this at the server under test, which answers that absolute URL)
#                         instead of running jobPars as a command (see below)
#
# What the server has to provide:
#   GET  <PILOT_QUEUEDATA_URL>                  the queue dict (see pilot_queue.json)
#   GET  <PILOT_STORAGEDATA_URL>                DDM endpoints (see make_ddmendpoints.py)
#   POST /server/panda/getJob, /server/panda/updateJob   (form-encoded, via curl)
# The job's transformation must end in "/jobO.runpayload.tar.gz" (any host); jobPars is then
# executed as a command line, e.g. "/bin/echo hello". See the HARVESTER_WORKDIR note below.
#
# Exit status: the pilot's exit code (0 also when the job itself failed: check the final
# updateJob state); 124/137 when it had to be stopped after PILOT_TIMEOUT; 143 when this script
# got SIGTERM/SIGINT (the pilot tree is stopped too); 2 if the environment is incomplete or the
# queuedata cannot be fetched. Runtime: ~23 s for a finished job, ~150 s for a failed one
# (pilot 3.7 waits a fixed ~115 s before the final update of a failed job).
set -u

die() { echo "run_pilot.sh: $*" >&2; exit 2; }

for v in PANDA_SERVER_URL PILOT_QUEUE PILOT_LABEL PILOT_WORKDIR PILOT_DIR; do
    [ -n "${!v:-}" ] || die "environment variable $v is required"
done
PY=${PILOT_PYTHON:-python3}
TIMEOUT=${PILOT_TIMEOUT:-300}
case "$TIMEOUT" in ''|*[!0-9]*) die "PILOT_TIMEOUT must be a number of seconds, got '$TIMEOUT'";; esac
[ -f "$PILOT_DIR/pilot.py" ] || die "no pilot.py in PILOT_DIR=$PILOT_DIR (run install_pilot.sh)"
command -v "$PY" >/dev/null || die "python interpreter '$PY' not found"
command -v curl >/dev/null || die "curl is required (pilot 3.7 talks to the server through curl)"
command -v openssl >/dev/null || die "openssl is required (throwaway X509_USER_PROXY)"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
command -v pgrep >/dev/null || echo "run_pilot.sh: warning: pgrep not found, clean-up after a timeout is limited" >&2

PILOT_DIR=$(cd "$PILOT_DIR" && pwd)
mkdir -p "$PILOT_WORKDIR" || die "cannot create PILOT_WORKDIR=$PILOT_WORKDIR"
W=$(cd "$PILOT_WORKDIR" && pwd)

# split PANDA_SERVER_URL into scheme://host and port (the pilot takes them as --url and -p)
read -r SRV_BASE SRV_PORT < <("$PY" - "$PANDA_SERVER_URL" <<'PYEOF'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
if u.scheme not in ("http", "https") or not u.hostname:
    sys.exit(1)
host = u.hostname if ":" not in u.hostname else "[%s]" % u.hostname
print("%s://%s %d" % (u.scheme, host, u.port or (443 if u.scheme == "https" else 80)))
PYEOF
)
[ -n "${SRV_PORT:-}" ] || die "cannot parse PANDA_SERVER_URL=$PANDA_SERVER_URL (want http[s]://host:port)"
SERVER_ROOT=${PANDA_SERVER_URL%/}

# loopback must never go through a proxy (neither our fetch nor the pilot's curl/urllib)
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
export NO_PROXY="$no_proxy"

mkdir -p "$W/work" "$W/creds" "$W/static" || die "cannot create directories under $W"

# --- auth: x509 mode with a throwaway self-signed cert+key. Over http nothing is verified and
# no Authorization header is sent; the pilot only needs a loadable PEM. Make sure no token
# mode is picked up from the caller's environment.
unset OIDC_AUTH_TOKEN OIDC_AUTH_ORIGIN PANDA_AUTH_TOKEN PANDA_AUTH_ORIGIN OIDC_AUTH_DIR PANDA_AUTH_DIR PANDA_AUTH_TOKEN_KEY
PROXY=${PILOT_X509_PROXY:-$W/creds/x509_proxy.pem}
if [ ! -s "$PROXY" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=panda-test-pilot" \
        -keyout "$W/creds/key.pem" -out "$W/creds/cert.pem" >/dev/null 2>&1 \
        || die "openssl could not create a self-signed certificate"
    cat "$W/creds/cert.pem" "$W/creds/key.pem" > "$PROXY.tmp" && chmod 600 "$PROXY.tmp" && mv "$PROXY.tmp" "$PROXY" \
        || die "cannot write $PROXY"
fi
export X509_USER_PROXY=$PROXY
if [ -n "${PILOT_TOKEN_FILE:-}" ]; then
    [ -s "$PILOT_TOKEN_FILE" ] || die "PILOT_TOKEN_FILE=$PILOT_TOKEN_FILE is empty or missing"
    [ -n "${PILOT_TOKEN_ORIGIN:-}" ] || die "PILOT_TOKEN_FILE needs PILOT_TOKEN_ORIGIN"
    export OIDC_AUTH_TOKEN=$PILOT_TOKEN_FILE OIDC_AUTH_ORIGIN=$PILOT_TOKEN_ORIGIN
fi

# --- queuedata. PanDA-style plain dict through --queuedata-url; the CRIC-style schedconfig
# ({queue: {...}}) is built from the same dict and handed over as a local file.
QD_SRC=${PILOT_QUEUEDATA_URL:-$SERVER_ROOT/cache/schedconfig/{pandaqueue\}.all.json}
SCHEDCONF=$W/static/schedconf.json
"$PY" - "${QD_SRC//\{pandaqueue\}/$PILOT_QUEUE}" "$PILOT_QUEUE" "$SCHEDCONF" <<'PYEOF' || die "cannot build the CRIC-style schedconfig (see above)"
import json, os, ssl, sys, urllib.request
src, queue, out = sys.argv[1:4]
try:
    if "://" in src:
        handlers = [urllib.request.ProxyHandler({})]
        if src.startswith("https://"):
            context = ssl.create_default_context(capath=os.environ.get("X509_CERT_DIR"))
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        with opener.open(src, timeout=20) as r:
            raw = r.read()
    else:
        with open(src, "rb") as f:
            raw = f.read()
    data = json.loads(raw)
except Exception as e:
    sys.exit("run_pilot.sh: cannot fetch queuedata from %s: %s" % (src, e))
if not isinstance(data, dict) or data.get("nickname") != queue:
    sys.exit("run_pilot.sh: queuedata from %s is not a dict with nickname=%s: %.300s" % (src, queue, raw))
with open(out + ".tmp", "w") as f:
    json.dump({queue: data}, f, indent=1)
os.replace(out + ".tmp", out)
with open(os.path.join(os.path.dirname(out), "queuedata.json"), "w") as f:
    json.dump(data, f)
PYEOF
# Over https the pilot reads the queuedata fetched above (its own fetch would need the CAs).
case "$QD_SRC" in https://*) QD_SRC=$W/static/queuedata.json ;; esac
export LOCAL_AGIS_SCHEDCONF=$SCHEDCONF
export STORAGEDATA_SERVER_URL=${PILOT_STORAGEDATA_URL:-$SERVER_ROOT/cache/ddmendpoints.json}

# --- transformation. 3.7's generic plugin only downloads trfs from hard-coded cern.ch/google
# URLs, but it first copies $HARVESTER_WORKDIR/jobO.*.tar.gz into the job dir and skips the
# download when a file named like the trf's basename is already there. So the executable
# wrapper below (named like a tarball) becomes "./jobO.runpayload.tar.gz <jobPars>".
# The directory holds nothing else (a pandaJobData file there could be picked up as a job).
if [ -n "${PILOT_TRF_PROXY:-}" ]; then
    # The pilot's curl fetches the transformation through the proxy; everything else it
    # sends goes to loopback directly (no_proxy above).
    unset HARVESTER_WORKDIR
    export http_proxy=$PILOT_TRF_PROXY
else
    HV=$W/harvester
    rm -rf "$HV" && mkdir -p "$HV" || die "cannot create $HV"
    printf '#!/bin/bash\n# test payload wrapper: run the job parameters as a command\nexec "$@"\n' > "$HV/jobO.runpayload.tar.gz"
    chmod 755 "$HV/jobO.runpayload.tar.gz"
    export HARVESTER_WORKDIR=$HV
fi

# --- the pilot's own configuration: its heartbeat period, when asked for
if [ -n "${PILOT_HEARTBEAT:-}" ]; then
    case "$PILOT_HEARTBEAT" in ''|*[!0-9]*) die "PILOT_HEARTBEAT must be a number of seconds";; esac
    sed -e "s/^heartbeat: .*/heartbeat: $PILOT_HEARTBEAT/" "$PILOT_DIR/pilot/util/default.cfg" \
        > "$W/static/pilot.cfg" || die "cannot write $W/static/pilot.cfg"
    export HARVESTER_PILOT_CONFIG=$W/static/pilot.cfg
fi

# --- pilot environment
# PILOT_NOKILL is mandatory: without it the pilot's kill_orphans() SIGTERM/SIGKILLs the process
# group of every process of this user with ppid 1 (e.g. the server under test).
export PILOT_NOKILL=1
export PILOT_HOME=$W/work
unset PILOT_LOGFILE QUEUEDATA_SERVER_URL

OPTS=(-q "$PILOT_QUEUE" -r "$PILOT_QUEUE" -s "$PILOT_QUEUE"
      --pilot-user "${PILOT_USER_PLUGIN:-generic}" -w generic -j "$PILOT_LABEL"
      --url "$SRV_BASE" -p "$SRV_PORT"
      --queuedata-url "$QD_SRC"
      -v 1 -d -a "$W/work")
[ "${PILOT_VERIFY_PROXY:-0}" = 1 ] || OPTS+=(-t)
# shellcheck disable=SC2206
[ -n "${PILOT_EXTRA_ARGS:-}" ] && OPTS+=($PILOT_EXTRA_ARGS)

# Do NOT start pilot.py under setsid (newer pilots call os.setpgrp(), which fails with EPERM for
# a session leader). It runs as a child of `timeout`, in the background, so that a signal to this
# script can still stop it. Payloads are started by the pilot in their own sessions, so clean-up
# after a timeout or a signal walks the process tree and kills by pid.
cd "$PILOT_DIR" || die "cannot cd to $PILOT_DIR"
START=$(date +%s)
# pilot3 3.7's atlas plugin deletes /work, /cores, /panda_pilot*, /venv and /pilot3 before it
# packs a job's log: its list of redundant files has these absolute entries, which it joins to
# the job's directory and removes with rmtree. On a build machine /work may hold the project
# itself, so that plugin runs in a mount namespace of its own, with an empty tmpfs over each of
# those paths that exists; where no namespace can be made, it does not run at all.
LAUNCH=()
if [ "${PILOT_USER_PLUGIN:-generic}" = atlas ]; then
    command -v unshare >/dev/null || die "the atlas plugin needs unshare (util-linux) to run safely"
    unshare -m true 2>/dev/null || die "the atlas plugin needs a mount namespace (unshare -m as root) to run safely"
    GUARD='for d in /work /cores /venv /pilot3 /panda_pilot*; do
               if [ -d "$d" ]; then mount -t tmpfs -o size=1m pilot-guard "$d" || exit 97; fi
           done; exec "$@"'
    LAUNCH=(unshare -m sh -c "$GUARD" sh)
fi
timeout -k 30 "$TIMEOUT" "${LAUNCH[@]}" "$PY" pilot.py "${OPTS[@]}" > "$W/pilot.out" 2>&1 < /dev/null &
TPID=$!

# pids of the process tree below $1 (bounded depth), deepest last
tree() {
    local level=$1 depth=0 next p
    while [ -n "$level" ] && [ $depth -lt 8 ]; do
        next=""
        for p in $level; do next="$next $(pgrep -P "$p" 2>/dev/null | tr '\n' ' ')"; done
        next=$(echo $next)
        [ -n "$next" ] && echo "$next"
        level=$next; depth=$((depth + 1))
    done
}
kill_tree() {  # SIGKILL the live tree below `timeout` (pilot, payload, helpers), pids read just now
    local pids; pids=$(tree "$TPID" | tr '\n' ' ')
    kill -KILL "$TPID" $pids 2>/dev/null
}
on_signal() {
    trap - TERM INT HUP
    echo "run_pilot.sh: interrupted, stopping the pilot" >&2
    kill -TERM "$TPID" 2>/dev/null       # timeout forwards it to the pilot
    for _ in $(seq 1 20); do kill -0 "$TPID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$TPID" 2>/dev/null && kill_tree
    exit 143
}
trap on_signal TERM INT HUP

# `timeout` sends SIGTERM after PILOT_TIMEOUT; the pilot may take a while to wind down (or not
# react at all). 10 s later, while the tree is still intact, kill it; `-k 30` is only a backstop.
DEADLINE=$((START + TIMEOUT + 10))
while kill -0 "$TPID" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        kill_tree
        break
    fi
    sleep 1
done
wait "$TPID"
RC=$?
[ "$RC" -eq 124 ] || [ "$RC" -eq 137 ] && echo "run_pilot.sh: pilot stopped after PILOT_TIMEOUT=${TIMEOUT}s" >&2
echo "run_pilot.sh: pilot exit code $RC after $(( $(date +%s) - START ))s (log: $W/pilot.out)"
exit "$RC"
