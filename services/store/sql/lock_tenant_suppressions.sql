-- Taken before suppressions of the tenants $1 are applied to waiting recipients, held to the
-- commit: waits for ingest chunks of those tenants in progress (migration 10).
SELECT lock_tenant_suppressions($1::text[])
