# Sourced by scripts/bench-tasks.sh and scripts/bench-events.sh: a fresh panda_bench database
# on PostgreSQL, a work directory with one online analysis queue, and the server's environment
# for it (POOL connections, default 8). Sets T (the release binaries), W and the trap that
# stops the server ($PID) and removes W.
T=${CARGO_TARGET_DIR:-$HOME/.cache/panda-server-ci-target}/release
W=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/cache" "$W/trf"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS panda_bench" >/dev/null 2>&1
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE panda_bench" >/dev/null
cat > "$W/queues.json" <<Q
{"ANALY_QUEUE": {"nickname": "ANALY_QUEUE", "status": "online", "type": "analysis", "maxrss": 4000,
  "astorages": {"pr": ["LOCAL_DISK"], "pw": ["LOCAL_DISK"], "pl": ["LOCAL_DISK"]}}}
Q
export PANDA_CONFIG=none PANDA_BACKEND=postgres PANDA_DBHOST=127.0.0.1 PANDA_DBPORT=5432 \
    PANDA_DBUSER=postgres PANDA_DBNAME=panda_bench PANDA_SCHEMAPANDA=doma_panda PANDA_HOME="$W" \
    PANDA_CACHE_DIR="$W/cache" PANDA_TRF_DIR="$W/trf" PANDA_QUEUE_CONFIG_FILE="$W/queues.json" \
    PANDA_PSERVERPORTHTTP=25180 PANDA_PSERVERPORT=25543 PANDA_DB_POOL_SIZE=${POOL:-8} \
    PANDA_METRICS_ADDRESS=off PANDA_DAEMON_METRICS_ADDRESS=off

# Starts the server (after `schema migrate`) and waits until it answers.
start_server() {
    "$T/panda-server" schema migrate >/dev/null
    "$T/panda-server" > "$W/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 50); do curl -s http://127.0.0.1:25180/server/panda/isAlive >/dev/null && break; sleep 0.2; done
}
