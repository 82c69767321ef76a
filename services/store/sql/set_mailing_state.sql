UPDATE mailings
SET state = $3,
    send_at = CASE WHEN $3 = 'scheduled' THEN $4 ELSE send_at END,
    max_per_hour = CASE WHEN $3 = 'scheduled' THEN $5 ELSE max_per_hour END,
    completed_at = CASE WHEN $3 IN ('completed', 'cancelled') THEN now() ELSE completed_at END,
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
