-- A dispute that reverses or restores credits changes its purchase, so the purchases
-- view moves the row's updated_at to it (0013 added what disputes hold back). Rows
-- projected before then kept the time of their last payment or refund: they take the
-- time of the last such dispute event up to the view's position (as the projector
-- would have), so that `ledger audit verify` finds the view as the replay has it.
UPDATE purchases p SET updated_at = t.updated_at
FROM (
    SELECT e.originator_id, max(e.recorded_at) AS updated_at
    FROM stored_events e,
         LATERAL (SELECT convert_from(e.state, 'UTF8')::jsonb AS data) d
    WHERE e.topic ~ '[.:](PaymentDisputed|DisputeClosed|DisputeUpdated)$'
      AND (coalesce((d.data ->> 'credits_reversed')::bigint, 0) <> 0
           OR coalesce((d.data ->> 'credits_restored')::bigint, 0) <> 0)
      AND e.notification_id <= coalesce(
          (SELECT position FROM projection_positions WHERE name = 'purchases'), 0)
    GROUP BY e.originator_id
) t
WHERE p.stream_id = t.originator_id AND p.updated_at < t.updated_at;
