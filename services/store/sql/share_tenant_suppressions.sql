-- Taken by an ingest chunk before its insert, held to its commit: a suppression of the tenant
-- added meanwhile waits for the chunk, and then finds its rows (migration 10).
SELECT share_tenant_suppressions($1)
