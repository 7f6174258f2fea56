#!/usr/bin/env bash
# Pilot cycles on upstream's database layout against ours, in one run (BENCHMARKS.md, "On
# upstream's layout"; docs/MIGRATION.md). Each round makes a fresh panda_bench database three
# ways, preloads ACTIVATED activated jobs, runs the maintenance step, starts the release
# server and runs PILOTS simulated v1 pilots for DURATION seconds:
#   ours      - made by our `schema migrate` (the schemas split as upstream splits them);
#   upstream  - a copy of TEMPLATE, a database made by scripts/upstream-database.sh, then our
#               `schema migrate` (which adds the claim's index);
#   bare      - the same copy with the two indexes our migrate adds dropped again: the claim on
#               upstream's own indexes.
#   scripts/bench-upstream-layout.sh TEMPLATE [ROUNDS] [PILOTS] [ACTIVATED] [DURATION]
# Prints one line per run and the median of each way.
set -euo pipefail
TEMPLATE=${1:?usage: $0 TEMPLATE [ROUNDS] [PILOTS] [ACTIVATED] [DURATION]}
ROUNDS=${2:-2}; PILOTS=${3:-64}; ACTIVATED=${4:-40000}; DURATION=${5:-15}
T=${CARGO_TARGET_DIR:-$HOME/.cache/panda-server-ci-target}/release
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
export PANDA_CONFIG=none PANDA_BACKEND=postgres PANDA_DBHOST=127.0.0.1 PANDA_DBPORT=5432 \
    PANDA_DBUSER=postgres PANDA_DBNAME=panda_bench PANDA_HOME="$W" \
    PANDA_QUEUE_CONFIG_FILE="$ROOT/deploy/queues.example.json" \
    PANDA_PSERVERPORTHTTP=25180 PANDA_PSERVERPORT=25543 PANDA_DB_POOL_SIZE=${POOL:-8} \
    PANDA_METRICS_ADDRESS=off PANDA_DAEMON_METRICS_ADDRESS=off RUST_LOG=${RUST_LOG:-warn}
URL=postgres://postgres@127.0.0.1:5432/panda_bench
psql_q() { psql -X -q -h 127.0.0.1 -U postgres "$@"; }

run_one() {
    local way=$1
    psql_q -d postgres -c "DROP DATABASE IF EXISTS panda_bench WITH (FORCE)"
    case $way in
        ours) psql_q -d postgres -c "CREATE DATABASE panda_bench" ;;
        *) psql_q -d postgres -c "CREATE DATABASE panda_bench TEMPLATE $TEMPLATE" ;;
    esac
    "$T/panda-server" schema migrate >/dev/null
    if [ "$way" = bare ]; then
        psql_q -d panda_bench -c "DROP INDEX doma_panda.jobsactive4_dispatch_idx, doma_panda.jobsdefined4_status_idx"
    fi
    "$T/panda-bench" preload --database-url "$URL" --activated "$ACTIVATED" --site TEST_QUEUE >/dev/null
    "$T/panda-server" daemon --run-once db_maintenance >/dev/null
    "$T/panda-server" httpd >"$W/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 50); do curl -s http://127.0.0.1:25180/server/panda/isAlive >/dev/null && break; sleep 0.2; done
    local out
    out=$("$T/panda-bench" --url http://127.0.0.1:25180 --server-pid "$PID" pilots --pilots "$PILOTS" \
        --jobs 0 --duration "$DURATION" --api v1 --site TEST_QUEUE)
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
    local rate
    rate=$(printf '%s\n' "$out" | grep -o '[0-9.]* cycles/s' | head -n 1 | cut -d' ' -f1)
    echo "way=$way cycles_per_s=$rate"
    printf '%s\n' "$out" | grep -E 'p99|check:' | sed 's/^/    /'
    echo "$way $rate" >>"$W/rates"
}

for _ in $(seq 1 "$ROUNDS"); do
    for way in ours upstream bare; do run_one "$way"; done
done
for way in ours upstream bare; do
    median=$(awk -v w="$way" '$1 == w {print $2}' "$W/rates" | sort -n |
        awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
    echo "median way=$way cycles_per_s=$median"
done
