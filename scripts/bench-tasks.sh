#!/usr/bin/env bash
# Task-processing benchmark on PostgreSQL (BENCHMARKS.md, "Task processing"): a fresh
# panda_bench database, the release server with the daemon's task-processing steps, then
# panda-bench tasks.
#   scripts/bench-tasks.sh [JOBS] [FINISH] [post]
# JOBS jobs are generated; FINISH of them are finished by 32 simulated pilots. With "post",
# the server runs no post-processor: the Adder is waited for, then
# `panda-server daemon --run-once post_processor` is timed alone. With "build", the task has a
# build step and the release of its JOBS held run jobs is timed.
set -euo pipefail
JOBS=${1:-100000}; FINISH=${2:-0}; MODE=${3:-}
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
    PANDA_PSERVERPORTHTTP=25180 PANDA_PSERVERPORT=25543 PANDA_DB_POOL_SIZE=8 \
    PANDA_METRICS_ADDRESS=off PANDA_DAEMON_METRICS_ADDRESS=off RUST_LOG=info
post='"post_processor": {"period": 1, "timeout": 600},'
extra=()
if [ "$MODE" = post ]; then post=''; extra=(--adder-only); fi
if [ "$MODE" = build ]; then extra=(--build); fi
export PANDA_DAEMON_CONFIG="{\"task_refiner\": {\"period\": 1}, \"contents_feeder\": {\"period\": 1},
  \"job_generator\": {\"period\": 1, \"timeout\": 600}, \"add_main\": {\"period\": 1}, $post
  \"db_maintenance\": {\"period\": 5}}"
"$T/panda-server" schema migrate >/dev/null
"$T/panda-server" > "$W/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 50); do curl -s http://127.0.0.1:25180/server/panda/isAlive >/dev/null && break; sleep 0.2; done
"$T/panda-bench" --url http://127.0.0.1:25180 --server-pid "$PID" tasks --jobs "$JOBS" \
    --finish "$FINISH" --pilots 32 --site ANALY_QUEUE "${extra[@]}"
if [ "$MODE" = post ]; then
    start=$(date +%s.%N)
    "$T/panda-server" daemon --run-once post_processor | grep -E "post_processor"
    echo "post_processor alone: $(echo "$(date +%s.%N) - $start" | bc) s for $FINISH jobs"
fi
