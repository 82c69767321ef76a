INSERT INTO suppressions (tenant_id, email, reason, note)
SELECT $1, e, $3, $4 FROM unnest($2::text[]) AS e
ON CONFLICT (tenant_id, email) DO NOTHING
