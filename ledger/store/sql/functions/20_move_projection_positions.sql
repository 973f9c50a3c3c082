-- The views' new positions, if each position row is still as this projector left it
-- (its position and xmin), in the statement that writes the views' rows
-- (projections/runner.py). A row another writer moved or holds (another projector's
-- batch, a rebuild's swap) raises LP001 and the whole statement writes nothing: the
-- projector then applies its batch in a transaction of its own, with the rows locked.
--
-- SKIP LOCKED rather than a wait: the statement has taken its tables' locks by the time
-- it gets here, and a rebuild holds the position rows before it takes the tables.
CREATE OR REPLACE FUNCTION move_projection_positions(
    names text[], left_at bigint[], left_xmins bigint[], moved_to bigint[]
)
RETURNS TABLE (view_name text, view_position bigint, row_xmin bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    as_left integer;
BEGIN
    PERFORM 1 FROM projection_positions AS p
        JOIN unnest(names, left_at, left_xmins) AS l(name, position, xmin) ON p.name = l.name
        WHERE p.position = l.position AND p.xmin::text::bigint = l.xmin
        FOR UPDATE OF p SKIP LOCKED;
    GET DIAGNOSTICS as_left = ROW_COUNT;
    IF as_left < cardinality(names) THEN
        RAISE EXCEPTION 'a view''s position moved since this projector wrote it'
            USING ERRCODE = 'LP001';
    END IF;
    RETURN QUERY
    UPDATE projection_positions AS p SET position = m.position, updated_at = now()
    FROM unnest(names, moved_to) AS m(name, position)
    WHERE p.name = m.name
    RETURNING p.name, p.position, p.xmin::text::bigint;
END;
$$;
