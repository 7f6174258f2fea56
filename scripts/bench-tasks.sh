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
. "$(dirname "$0")/bench-setup.sh"
export RUST_LOG=info
post='"post_processor": {"period": 1, "timeout": 600},'
extra=()
if [ "$MODE" = post ]; then post=''; extra=(--adder-only); fi
if [ "$MODE" = build ]; then extra=(--build); fi
export PANDA_DAEMON_CONFIG="{\"task_refiner\": {\"period\": 1}, \"contents_feeder\": {\"period\": 1},
  \"job_generator\": {\"period\": 1, \"timeout\": 600}, \"add_main\": {\"period\": 1}, $post
  \"db_maintenance\": {\"period\": 5}}"
start_server
"$T/panda-bench" --url http://127.0.0.1:25180 --server-pid "$PID" tasks --jobs "$JOBS" \
    --finish "$FINISH" --pilots 32 --site ANALY_QUEUE "${extra[@]}"
if [ "$MODE" = post ]; then
    start=$(date +%s.%N)
    "$T/panda-server" daemon --run-once post_processor | grep -E "post_processor"
    echo "post_processor alone: $(echo "$(date +%s.%N) - $start" | bc) s for $FINISH jobs"
fi
