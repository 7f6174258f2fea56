#!/usr/bin/env bash
# Event-service benchmark on PostgreSQL (BENCHMARKS.md, "The event service"): a fresh
# panda_bench database, the release server with the daemon's task-processing steps, then
# panda-bench events.
#   [RATE=calls/s] [POOL=connections] scripts/bench-events.sh [CLIENTS] [RANGES] [DURATION] [EVENTS]
# One event-service task of CLIENTS jobs of EVENTS ranges each; CLIENTS simulated pilots take
# RANGES ranges per getEventRanges and report them in one updateEventRanges, for DURATION s.
set -euo pipefail
CLIENTS=${1:-64}; RANGES=${2:-8}; DURATION=${3:-20}; EVENTS=${4:-2000}
T=${CARGO_TARGET_DIR:-$HOME/.cache/panda-server-ci-target}/release
W=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/cache" "$W/trf"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS panda_bench" >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE panda_bench" >/dev/null
cat > "$W/queues.json" <<Q
{"ANALY_QUEUE": {"nickname": "ANALY_QUEUE", "status": "online", "type": "analysis", "maxrss": 4000,
  "astorages": {"pr": ["LOCAL_DISK"], "pw": ["LOCAL_DISK"], "pl": ["LOCAL_DISK"]}}}
Q
export PANDA_CONFIG=none PANDA_BACKEND=postgres PANDA_DBHOST=127.0.0.1 PANDA_DBPORT=5432 \
    PANDA_DBUSER=postgres PANDA_DBNAME=panda_bench PANDA_SCHEMAPANDA=doma_panda PANDA_HOME="$W" \
    PANDA_CACHE_DIR="$W/cache" PANDA_TRF_DIR="$W/trf" PANDA_QUEUE_CONFIG_FILE="$W/queues.json" \
    PANDA_PSERVERPORTHTTP=25180 PANDA_PSERVERPORT=25543 PANDA_DB_POOL_SIZE=${POOL:-8} \
    PANDA_METRICS_ADDRESS=off PANDA_DAEMON_METRICS_ADDRESS=off RUST_LOG=warn
export PANDA_DAEMON_CONFIG="{\"task_refiner\": {\"period\": 1}, \"contents_feeder\": {\"period\": 1},
  \"job_generator\": {\"period\": 1, \"timeout\": 600}, \"db_maintenance\": {\"period\": ${MAINT:-5}}}"
"$T/panda-server" schema migrate >/dev/null
"$T/panda-server" > "$W/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 50); do curl -s http://127.0.0.1:25180/server/panda/isAlive >/dev/null && break; sleep 0.2; done
/usr/bin/time -f "bench: %U user %S sys" "$T/panda-bench" --url http://127.0.0.1:25180 --server-pid "$PID" events --jobs "$CLIENTS" \
    --events "$EVENTS" --clients "$CLIENTS" --ranges "$RANGES" --duration "$DURATION" \
    --site ANALY_QUEUE ${RATE:+--rate "$RATE"}
