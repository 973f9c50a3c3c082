-- Endpoints are listed a page at a time, as every list is (`limit` and an `after` cursor):
-- each endpoint has a position in the order endpoints were made, which is the cursor.
-- Those made before are numbered in the order they were listed until now.
ALTER TABLE webhook_endpoints ADD COLUMN position bigint;
UPDATE webhook_endpoints AS e
   SET position = o.n
  FROM (SELECT endpoint_id, row_number() OVER (ORDER BY created_at, endpoint_id) AS n
          FROM webhook_endpoints) AS o
 WHERE e.endpoint_id = o.endpoint_id;
ALTER TABLE webhook_endpoints ALTER COLUMN position SET NOT NULL;
ALTER TABLE webhook_endpoints ALTER COLUMN position ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('webhook_endpoints', 'position'),
              (SELECT coalesce(max(position), 0) + 1 FROM webhook_endpoints), false);
CREATE UNIQUE INDEX webhook_endpoints_by_position ON webhook_endpoints (position);
