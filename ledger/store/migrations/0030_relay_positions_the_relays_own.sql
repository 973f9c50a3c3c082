-- A relay's position (the rows named 'relay:…') is moved only by the relay's own functions,
-- start_relay_position() and move_relay_position(), which run as the owner: ledger_service
-- and ledger_projector, which write the views' positions in the same table, may read a
-- relay's row but neither make, move nor delete one. Moved forward, the relay would never
-- publish the events it skipped; moved back or deleted, it would publish them again.
--
-- Row security, for every role but the owner (whose functions these are) and a superuser:
-- every row may be read; only rows not named 'relay:…' written. TRUNCATE passes row
-- security by, so sql/grants.sql grants it on this table to no one. A login role that
-- bypasses row security is refused by set-up (refuse_a_powerful_role).
ALTER TABLE projection_positions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS positions_read ON projection_positions;
CREATE POLICY positions_read ON projection_positions FOR SELECT USING (true);
DROP POLICY IF EXISTS views_positions_written ON projection_positions;
CREATE POLICY views_positions_written ON projection_positions
    USING (NOT starts_with(name, 'relay:')) WITH CHECK (NOT starts_with(name, 'relay:'));
