#!/usr/bin/env bash
# The monitor at scale on PostgreSQL (BENCHMARKS.md, "The monitor"): a fresh panda_bench
# database with 1,000,000 archived jobs over ten sites, 100,000 activated jobs at TEST_QUEUE
# and a 10,000-job task (2,000 of its jobs finished), then the release web tier and
#   1. PILOTS simulated v1 pilots alone for DURATION seconds,
#   2. the same pilots with VIEWERS monitor viewers beside them (panda-bench monitor: a
#      site's finished jobs, a job, the dash, the task; each page in turn, as HTML), each
#      viewer reading a page every PACE seconds,
#   3. the same with viewers that ask as fast as the server answers,
#   4. those viewers alone,
#   5. the pilots alone again (the database has grown by the earlier phases' reports).
#   scripts/bench-monitor.sh [VIEWERS] [PILOTS] [DURATION] [PACE]
set -euo pipefail
VIEWERS=${1:-16}; PILOTS=${2:-64}; DURATION=${3:-20}; PACE=${4:-1}
. "$(dirname "$0")/bench-setup.sh"
cat > "$W/queues.json" <<Q
{"ANALY_QUEUE": {"nickname": "ANALY_QUEUE", "status": "online", "type": "analysis", "maxrss": 4000,
  "astorages": {"pr": ["LOCAL_DISK"], "pw": ["LOCAL_DISK"], "pl": ["LOCAL_DISK"]}},
 "TEST_QUEUE": {"nickname": "TEST_QUEUE", "status": "online", "type": "production", "maxrss": 4000}}
Q
URL=postgres://postgres@127.0.0.1:5432/panda_bench
B=http://127.0.0.1:25180
"$T/panda-server" schema migrate >/dev/null
start=$(date +%s)
for i in 01 02 03 04 05 06 07 08 09 10; do
    "$T/panda-bench" preload --database-url "$URL" --site "SITE_$i" --archived 100000 >/dev/null
done
"$T/panda-bench" preload --database-url "$URL" --site TEST_QUEUE --activated 100000 >/dev/null
echo "preloaded 1,000,000 archived and 100,000 activated jobs in $(( $(date +%s) - start )) s"

# The task, made by the daemon's steps on the all-in-one server.
export PANDA_DAEMON_CONFIG='{"task_refiner": {"period": 1}, "contents_feeder": {"period": 1},
  "job_generator": {"period": 1, "timeout": 600}, "add_main": {"period": 1},
  "post_processor": {"period": 1, "timeout": 600}}'
start_server
task_out=$("$T/panda-bench" --url "$B" tasks --jobs 10000 --finish 2000 --pilots 16 --site ANALY_QUEUE)
TASK=$(printf '%s\n' "$task_out" | grep -o 'task [0-9]*' | head -n 1 | cut -d' ' -f2)
echo "task $TASK: $(printf '%s\n' "$task_out" | grep generated)"
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
unset PANDA_DAEMON_CONFIG
"$T/panda-server" daemon --run-once db_maintenance >/dev/null

"$T/panda-server" httpd > "$W/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 50); do curl -s "$B/server/panda/isAlive" >/dev/null && break; sleep 0.2; done
pilots() {
    "$T/panda-bench" --url "$B" --server-pid "$PID" pilots --pilots "$PILOTS" --jobs 0 \
        --duration "$DURATION" --api v1 --site TEST_QUEUE
}
viewers() {
    "$T/panda-bench" --url "$B" monitor --viewers "$VIEWERS" --duration "$DURATION" \
        --site SITE_01 --task "$TASK" --pace "$1" | grep -Ev '^(command|page)'
}
# Between phases, what the daemon does every minute where autovacuum is off: the pilots'
# dead rows would otherwise slow each later phase (run 5 shows the pilots alone again).
maintain() { "$T/panda-server" daemon --run-once db_maintenance >/dev/null; }
beside() {
    maintain
    viewers "$1" > "$W/viewers.out" &
    VPID=$!
    pilots | grep -E 'cycles/s|p99|check:'
    wait "$VPID"
    sed 's/^/   viewers: /' "$W/viewers.out"
}
echo "== $PILOTS pilots alone"
pilots | grep -E 'cycles/s|p99|check:'
echo "== $PILOTS pilots with $VIEWERS viewers, one page every $PACE s each"
beside "$PACE"
echo "== $PILOTS pilots with $VIEWERS viewers asking as fast as answered"
beside 0
echo "== $VIEWERS viewers alone, as fast as answered"
maintain
viewers 0
echo "== $PILOTS pilots alone again"
maintain
pilots | grep -E 'cycles/s|p99|check:'
