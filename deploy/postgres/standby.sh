#!/bin/sh
# The streaming hot standby (postgres-standby): a copy of the primary made with
# pg_basebackup -R (standby.signal and primary_conninfo), then PostgreSQL replaying what
# the primary streams and answering reads. `ledger dev cluster` does the same
# (cluster/postgres.py).
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_basebackup -h postgres -U postgres -D "$PGDATA" -R -X stream -c fast; do
        echo "waiting for the primary"; sleep 2
    done
    chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c hot_standby_feedback=on
