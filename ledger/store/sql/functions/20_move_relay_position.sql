-- A relay's new position, once the broker has acknowledged everything up to it
-- (relay/positions.py), in the transaction that holds the relay's turn. Only rows
-- named 'relay:…': see 20_start_relay_position.sql.
CREATE OR REPLACE FUNCTION move_relay_position(relay text, moved_to bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF relay IS NULL OR NOT starts_with(relay, 'relay:') THEN
        RAISE EXCEPTION 'a relay''s position is named relay:…, not %', relay
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO projection_positions (name, position) VALUES (relay, moved_to)
        ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now();
END;
$$;
