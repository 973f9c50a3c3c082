-- Rebuilds before this migration named the views' indexes after the fresh tables they
-- were made on (balances__rebuild_pkey1, ...; projections/rebuild.py now keeps the
-- names): each index of a view gets back the name the migrations gave it, found by what
-- it indexes. A database never rebuilt has them all already.
DO $$
DECLARE
    wanted record;
    drifted text;
BEGIN
    FOR wanted IN SELECT * FROM (VALUES
        ('balances', 'balances_pkey', 'UNIQUE USING btree (account_id)'),
        ('balances', 'balances_stream_id_key', 'UNIQUE USING btree (stream_id)'),
        ('grants', 'grants_active_by_expiry',
         'USING btree (expires_at) WHERE ((status = ''active''::text) AND (expires_at IS NOT NULL))'),
        ('grants', 'grants_by_account', 'USING btree (stream_id, "position")'),
        ('grants', 'grants_pkey', 'UNIQUE USING btree (grant_id)'),
        ('holds', 'holds_by_stream', 'USING btree (stream_id, "position" DESC)'),
        ('holds', 'holds_open_by_expiry', 'USING btree (expires_at) WHERE (status = ''held''::text)'),
        ('holds', 'holds_pkey', 'UNIQUE USING btree (hold_id)'),
        ('notifier_accounts', 'notifier_accounts_pkey', 'UNIQUE USING btree (stream_id)'),
        ('purchases', 'purchases_account_idx', 'USING btree (account_id, "position" DESC)'),
        ('purchases', 'purchases_pending_by_creation',
         'USING btree (created_at) WHERE (status = ''pending''::text)'),
        ('purchases', 'purchases_pkey', 'UNIQUE USING btree (session_id)'),
        ('purchases', 'purchases_stream_id_key', 'UNIQUE USING btree (stream_id)'),
        ('statement_lines', 'statement_lines_pkey', 'UNIQUE USING btree (account_id, "position")'),
        ('statement_lines', 'statement_lines_stream_id_version_key',
         'UNIQUE USING btree (stream_id, version)')
    ) AS w(view_table, index_name, shape) LOOP
        CONTINUE WHEN to_regclass(format('public.%I', wanted.index_name)) IS NOT NULL;
        SELECT c.relname INTO drifted
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = to_regclass(format('public.%I', wanted.view_table))
          AND regexp_replace(pg_get_indexdef(i.indexrelid),
                             '^CREATE (UNIQUE )?INDEX \S+ ON \S+ ', '\1') = wanted.shape
        ORDER BY c.relname LIMIT 1;
        IF drifted IS NOT NULL THEN
            EXECUTE format('ALTER INDEX public.%I RENAME TO %I', drifted, wanted.index_name);
        END IF;
    END LOOP;
END $$;
