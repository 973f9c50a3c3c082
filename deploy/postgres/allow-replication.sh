#!/bin/sh
# Run once by the postgres image when it creates the primary's data: lets the standby
# (postgres-standby) stream from it, as the postgres superuser, with its password.
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
