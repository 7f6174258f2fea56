#!/usr/bin/env bash
# Makes a PostgreSQL database the way upstream's own schema scripts lay it out, to test this
# server on it (the store's and the server's suites, `PANDA_TEST_UPSTREAM_DATABASE_URL` and
# `PANDA_TEST_UPSTREAM_TEMPLATE`; docs/MIGRATION.md).
#
#   scripts/upstream-database.sh SNAPSHOT [DBNAME]
#
# SNAPSHOT is a checkout or an unpacked archive of PanDAWMS/panda-database (tested with tag
# 0.1.6): the directory holding `schema/postgres/sqls`. DBNAME defaults to `panda_upstream`;
# an existing database of that name is dropped first. Connects as PGUSER (default postgres)
# to PGHOST:PGPORT (default 127.0.0.1:5432).
#
# The files run in the order upstream's init script gives them, with two differences a test
# machine needs:
# - pg_cron is not loaded (it needs shared_preload_libraries and a restart); the files that
#   only schedule upstream's periodic procedures are skipped, the procedures themselves exist;
# - Debian's pg_partman is 4.x, whose create_parent calls range partitioning `native`, where
#   the scripts (written for 5.x) say `range`. The word is changed on the fly; the partitions
#   made are the same kind (declarative range partitions);
# - 0.1.6's fresh-install files use `worker_node_queue` before any of them creates it (only the
#   0.0.31 patch does), so that patch's CREATE TABLE of it runs before the scheduler jobs.
# The database needs the package postgresql-<version>-partman.
set -euo pipefail

snapshot="${1:?usage: $0 SNAPSHOT [DBNAME]}"
db="${2:-panda_upstream}"
sqls="$snapshot/schema/postgres/sqls"
[ -f "$sqls/pg_PANDA_TABLE.sql" ] || {
    echo "$sqls/pg_PANDA_TABLE.sql not found: SNAPSHOT must be a panda-database tree" >&2
    exit 2
}
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

version="$(cat "$snapshot/schema/postgres/version")"
IFS=. read -r major minor patch <<<"$version"

psql_q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql_q -d postgres -c "CREATE DATABASE $db"
# Upstream's roles: the owner `panda` and the monitor's readers and writers.
for role in panda doma_pandabigmon_r doma_pandabigmon_w; do
    psql_q -d postgres -Atc "SELECT 1 FROM pg_roles WHERE rolname = '$role'" | grep -q 1 ||
        psql_q -d postgres -c "CREATE ROLE $role LOGIN"
done
psql_q -d "$db" -c "CREATE SCHEMA IF NOT EXISTS partman" \
    -c "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for comp in PANDA PANDAMETA PANDAARCH PANDABIGMON DEFT PARTITION; do
    for part in "" _TABLE _VIEW _TYPE _SEQUENCE _FUNCTION _TRIGGER _SCHEDULER_JOBS _PROCEDURE; do
        file="$sqls/pg_${comp}${part}.sql"
        [ -f "$file" ] || continue
        wnq_patch="$sqls/patches/0.0.31.patch.sql"
        if [ "$comp$part" = PANDA_SCHEDULER_JOBS ] && [ -f "$wnq_patch" ]; then
            sed -n '/CREATE TABLE IF NOT EXISTS doma_panda.worker_node_queue/,/^);/p' "$wnq_patch" |
                psql_q -d "$db" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
        fi
        if [ "$comp" = PARTITION ]; then
            sed "s/p_type => 'range'/p_type => 'native'/" "$file" | psql -X -q -d "$db" >"$log" 2>&1 ||
                { cat "$log" >&2; exit 1; }
        else
            # Upstream's files are not all error-free (grants to roles of Oracle origin); like
            # upstream's init script, only ON_ERROR_STOP inside a file stops it.
            psql -X -q -d "$db" -f "$file" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
        fi
    done
done
psql_q -d "$db" -c "INSERT INTO doma_panda.pandadb_version (component, major, minor, patch) \
    VALUES ('PanDA', '$major', '$minor', '$patch')"
psql -X -q -d "$db" -f "$sqls/post_step_panda.sql" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
tables="$(psql_q -d "$db" -Atc "SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'doma_%'")"
echo "made $db: upstream layout $version, $tables tables"
