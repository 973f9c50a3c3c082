-- A relay's position row made at 0 if there is none yet, and its position
-- (relay/positions.py): what ledger_relay may write, and only rows named 'relay:…'.
-- ledger_relay reads the store and moves its own position, nothing else: it may not
-- write projection_positions itself, where a view's row moved on would make the
-- projector skip events. As its owner, as append() runs (20_append.sql says why
-- pg_temp is last).
CREATE OR REPLACE FUNCTION start_relay_position(relay text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF relay IS NULL OR NOT starts_with(relay, 'relay:') THEN
        RAISE EXCEPTION 'a relay''s position is named relay:…, not %', relay
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO projection_positions (name, position) VALUES (relay, 0)
        ON CONFLICT (name) DO NOTHING;
    RETURN (SELECT position FROM projection_positions WHERE name = relay);
END;
$$;
