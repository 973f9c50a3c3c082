-- Marks a database whose set-up made move_projection_positions()
-- (sql/functions/20_move_projection_positions.sql, made before the migrations at every
-- set-up), which the projector's batches call once it knows where it left the views: a
-- service started on a database set up by an earlier version is told to migrate first,
-- rather than its projector failing every other batch.
SELECT 1;
