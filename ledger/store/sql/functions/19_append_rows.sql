-- The row append() (20_append.sql) takes its writes in: one array of these instead of an
-- array per column. Each row names its command (1 .. commands) and carries the next of
-- that command's events (or none: NULLs) and the next of its claims (or none); a
-- snapshot fills the event's fields. asyncpg checks every element of an array parameter
-- against collections.abc's ABCs in Python: a spend (one event, one claim) cost sixteen
-- such checks in ten arrays of columns, four in one row (ledger/store/commit.py).
--
-- A type, not a function, but here: append()'s signature needs it, and this folder is
-- applied before the migrations (ledger/store/migrate.py). Made once and never altered
-- in place: another shape is a type of another name.
--
-- The previous release's append() of fifteen arrays of columns is left where set-up finds
-- it: during a rolling upgrade that release's processes still write through it, beside
-- this release's (both follow the same protocol under the same locks). The next release's
-- migration drops it, as 0012 dropped the forms before it.
DO $$
BEGIN
    IF to_regtype('public.append_row') IS NULL THEN
        CREATE TYPE public.append_row AS (
            command int,
            id uuid, version bigint, topic text, state bytea,
            scope text, key text, hash bytea, answer bytea);
    END IF;
END
$$;
