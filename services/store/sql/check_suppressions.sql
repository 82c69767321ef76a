SELECT email, reason, note, created_at FROM suppressions
WHERE tenant_id = $1 AND email = ANY ($2::text[]) ORDER BY email
