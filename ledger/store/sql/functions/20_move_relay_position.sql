-- A relay's new position, once the broker has acknowledged everything up to it
-- (relay/positions.py), in the transaction that holds the relay's turn. Only rows
-- named 'relay:…': see 20_start_relay_position.sql. Never below 0, where no position of the
-- store is: /metrics would show the relay more behind than the store has events.
CREATE OR REPLACE FUNCTION move_relay_position(relay text, moved_to bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF relay IS NULL OR NOT starts_with(relay, 'relay:') THEN
        RAISE EXCEPTION 'a relay''s position is named relay:…, not %', relay
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF moved_to IS NULL OR moved_to < 0 THEN
        RAISE EXCEPTION 'a relay''s position is 0 or more, not %', coalesce(moved_to::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO projection_positions (name, position) VALUES (relay, moved_to)
        ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now();
END;
$$;
