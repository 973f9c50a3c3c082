-- The purchases view keeps what disputes hold back of each purchase, beside what
-- refunds took: a dispute reverses credits, a win or a later refund restores them.
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS credits_reversed bigint NOT NULL DEFAULT 0;

-- Rows projected before this column: what their session's events reversed, less what
-- they restored, up to the view's position (the projector adds the rest as it goes).
UPDATE purchases p SET credits_reversed = t.credits_reversed
FROM (
    SELECT e.originator_id,
           sum(coalesce((convert_from(e.state, 'UTF8')::jsonb ->> 'credits_reversed')::bigint, 0)
             - coalesce((convert_from(e.state, 'UTF8')::jsonb ->> 'credits_restored')::bigint, 0))
               AS credits_reversed
    FROM stored_events e
    WHERE e.topic ~ '[.:](PaymentDisputed|DisputeClosed|DisputeUpdated|PaymentRefunded)$'
      AND e.notification_id <= coalesce(
          (SELECT position FROM projection_positions WHERE name = 'purchases'), 0)
    GROUP BY e.originator_id
) t
WHERE p.stream_id = t.originator_id AND t.credits_reversed <> 0;
