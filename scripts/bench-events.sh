#!/usr/bin/env bash
# Event-service benchmark on PostgreSQL (BENCHMARKS.md, "The event service"): a fresh
# panda_bench database, the release server with the daemon's task-processing steps, then
# panda-bench events.
#   [RATE=calls/s] [POOL=connections] [MAINT=db_maintenance period] [RUST_LOG=...] [KEEP_LOG=file]
#   scripts/bench-events.sh [CLIENTS] [RANGES] [DURATION] [EVENTS]
# (KEEP_LOG keeps the server's log, e.g. with RUST_LOG=warn,panda_store::group_commit=debug for
# each batch's size and time; PANDA_GROUP_COMMIT=False turns group commit off.)
# One event-service task of CLIENTS jobs of EVENTS ranges each; CLIENTS simulated pilots take
# RANGES ranges per getEventRanges and report them in one updateEventRanges, for DURATION s.
set -euo pipefail
CLIENTS=${1:-64}; RANGES=${2:-8}; DURATION=${3:-20}; EVENTS=${4:-5000}
. "$(dirname "$0")/bench-setup.sh"
export RUST_LOG=${RUST_LOG:-warn}
export PANDA_DAEMON_CONFIG="{\"task_refiner\": {\"period\": 1}, \"contents_feeder\": {\"period\": 1},
  \"job_generator\": {\"period\": 1, \"timeout\": 600}, \"db_maintenance\": {\"period\": ${MAINT:-5}}}"
start_server
/usr/bin/time -f "bench: %U user %S sys" "$T/panda-bench" --url http://127.0.0.1:25180 --server-pid "$PID" events --jobs "$CLIENTS" \
    --events "$EVENTS" --clients "$CLIENTS" --ranges "$RANGES" --duration "$DURATION" \
    --site ANALY_QUEUE ${RATE:+--rate "$RATE"}
if [ -n "${KEEP_LOG:-}" ]; then cp "$W/server.log" "$KEEP_LOG"; fi
