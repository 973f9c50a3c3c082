-- What the service's, the projector's and the relay's roles may do, applied after the
-- migrations at every start-up.
--
-- ledger_owner owns every table and function; nobody logs in as it (the
-- migration step takes it with SET ROLE). ledger_service, the role the API,
-- the CLI and the projector `ledger serve` runs connect as, owns nothing, so it can neither ALTER
-- a table nor disable a trigger; it may not UPDATE, DELETE or TRUNCATE history
-- (stored_events, snapshots, claims) and writes it only through append() and its
-- one-command form append_one(), which run as the owner and follow the ordering and
-- hash-chain protocol. Nor may it make temporary objects (ledger/store/migrate.py).
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ledger_service;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM ledger_service;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ledger_service;

-- History: read only; written through append() and append_one().
GRANT SELECT ON stored_events, snapshots, claims, schema_migrations TO ledger_service;
REVOKE ALL ON FUNCTION append(int, append_row[], append_row[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION append(int, append_row[], append_row[]) TO ledger_service;
REVOKE ALL ON FUNCTION append_one(uuid, bigint, text, bytea, text, text, bytea, bytea)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION append_one(uuid, bigint, text, bytea, text, text, bytea, bytea)
    TO ledger_service;

-- The views: derived from history by the projector, rebuilt at will. Their positions too,
-- but not a relay's ('relay:…', in the same table): row security lets only the relay's
-- functions write those (migration 0030), and TRUNCATE, which row security does not stop,
-- is no one's on projection_positions.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
    ON balances, purchases, statement_lines, holds, notifier_accounts, grants
    TO ledger_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_positions TO ledger_service;

-- Access and outbound notifications: configuration and delivery state, not history.
GRANT SELECT, INSERT, UPDATE ON api_tokens, webhook_endpoints, webhook_deliveries
    TO ledger_service;
GRANT SELECT, INSERT ON webhook_attempts TO ledger_service;
GRANT USAGE ON SEQUENCE webhook_deliveries_delivery_id_seq TO ledger_service;

-- The relay's own role (ledger relay, docs/relay.md): it reads history and moves its
-- own position, through start_relay_position() and move_relay_position(), which write
-- only the rows named 'relay:…'. It may not append, nor write a view, a token or a
-- delivery. The service's role may call them too: a relay given it still runs.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ledger_relay;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM ledger_relay;
GRANT USAGE ON SCHEMA public TO ledger_relay;
GRANT SELECT ON stored_events, projection_positions, schema_migrations TO ledger_relay;
REVOKE ALL ON FUNCTION start_relay_position(text), move_relay_position(text, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION start_relay_position(text), move_relay_position(text, bigint)
    TO ledger_relay, ledger_service;

-- The projector's own role (ledger project on a host of its own: docker-compose.yml's
-- projector, docs/production.md). It reads history, writes the views and their positions,
-- and queues and sends the webhook deliveries. It may not append, claim a key, touch a
-- token (a row of its own in api_tokens would be a ledger:write token), nor change an
-- endpoint. A projector given ledger_service (`ledger serve`'s own) still runs.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ledger_projector;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM ledger_projector;
GRANT USAGE ON SCHEMA public TO ledger_projector;
GRANT SELECT ON stored_events, snapshots, schema_migrations, webhook_endpoints
    TO ledger_projector;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
    ON balances, purchases, statement_lines, holds, notifier_accounts, grants
    TO ledger_projector;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_positions TO ledger_projector;
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO ledger_projector;
GRANT SELECT, INSERT ON webhook_attempts TO ledger_projector;
GRANT USAGE ON SEQUENCE webhook_deliveries_delivery_id_seq TO ledger_projector;

-- Turns and waits: the advisory lock functions are ledger_owner's alone (advisory_locks.sql,
-- applied after this file by set-up's role): a role that could take any advisory lock could
-- hold the one every append waits for. Each role gets the owner's function for the turn it
-- takes, and nothing that leaves the ordering lock held past a call.
REVOKE ALL ON FUNCTION take_relay_turn(text), take_reconcile_turn(), let_go_of_reconcile_turn(),
    newer_than_every_append(), let_go_of_advisory_locks() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION take_relay_turn(text) TO ledger_relay, ledger_service;
GRANT EXECUTE ON FUNCTION take_reconcile_turn(), let_go_of_reconcile_turn(),
    newer_than_every_append(), let_go_of_advisory_locks() TO ledger_service;
