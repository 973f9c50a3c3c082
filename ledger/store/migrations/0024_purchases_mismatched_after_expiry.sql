-- A payment of another amount leaves its purchase pending, for review, even when its
-- session had expired or failed before (money came after all); the first release's
-- purchases view kept such a row 'expired' or 'failed'. Nothing changes a session's
-- status after a mismatch, so every row with one up to the view's position is pending.
UPDATE purchases p SET status = 'pending'
WHERE p.status <> 'pending'
  AND EXISTS (
      SELECT 1 FROM stored_events e
      WHERE e.originator_id = p.stream_id
        AND e.topic ~ '[.:]PaymentMismatched$'
        AND e.notification_id <= coalesce(
            (SELECT position FROM projection_positions WHERE name = 'purchases'), 0));
