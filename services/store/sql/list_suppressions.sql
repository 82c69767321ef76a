SELECT email, reason, note, created_at FROM suppressions
WHERE tenant_id = $1 AND email > $2 ORDER BY email LIMIT $3
