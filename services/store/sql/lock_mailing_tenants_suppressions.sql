-- The exclusive suppression locks of the tenants of mailings $1, taken by a write-back that
-- suppresses addresses before it writes anything (migration 10).
SELECT lock_tenant_suppressions(ARRAY(SELECT m.tenant_id FROM mailings m WHERE m.id = ANY ($1::bigint[])))
