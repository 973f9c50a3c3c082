-- Group commit (many commands' appends in one transaction) added a second write
-- function here. Its successor is the one write function,
-- ledger/store/sql/functions/20_append.sql; migration 0012 drops the old ones.
SELECT 1;
