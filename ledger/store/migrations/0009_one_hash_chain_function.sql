-- This migration gave both old write functions one hash-chain helper. Stored
-- functions now live one per file in ledger/store/sql/functions/ and are
-- applied at every start-up; migration 0012 drops the old ones.
SELECT 1;
