-- Finding every aggregate of a kind (every account, for the monthly reset)
-- reads one row per aggregate instead of every event.
CREATE INDEX IF NOT EXISTS stored_events_creations_idx
    ON stored_events (topic) WHERE originator_version = 1;
