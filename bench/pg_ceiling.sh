#!/usr/bin/env bash
# The PostgreSQL ceiling for a transaction comparable to one randomization: lock a row, update
# it, insert a row, commit; each client works on its own row (one site each), as in
# bench/randomize.py. Prints pgbench's figures; compare randomizations/s with its tps.
#   bench/pg_ceiling.sh [CLIENTS] [SECONDS]     (PGHOST/PGUSER/PGDATABASE as for psql)
set -euo pipefail
clients=${1:-75}
seconds=${2:-15}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
schema="pgceiling_$$"
script=$(mktemp)
trap 'psql -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null; rm -f "$script"' EXIT
psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE SCHEMA $schema;
CREATE TABLE $schema.site (id int PRIMARY KEY, n int NOT NULL);
CREATE TABLE $schema.log (id bigserial PRIMARY KEY, site int NOT NULL, at timestamptz NOT NULL,
                          payload text NOT NULL);
INSERT INTO $schema.site SELECT g, 0 FROM generate_series(1, $clients) g;
SQL
cat > "$script" <<SQL
\set site :client_id + 1
BEGIN;
SELECT n FROM $schema.site WHERE id = :site FOR UPDATE;
UPDATE $schema.site SET n = n + 1 WHERE id = :site;
INSERT INTO $schema.log (site, at, payload) VALUES (:site, now(), md5(random()::text));
COMMIT;
SQL
pgbench -n -c "$clients" -j 2 -T "$seconds" -f "$script" -r 2>&1 | grep -E "tps|latency|clients|transactions"
