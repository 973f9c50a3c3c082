-- Marks a database whose set-up made the role ledger_relay and the functions it moves its
-- position with (sql/functions/20_start_relay_position.sql, 20_move_relay_position.sql,
-- made before the migrations at every set-up): a relay started on a database set up by an
-- earlier version is told to set it up first, rather than failing on a function not there.
SELECT 1;
