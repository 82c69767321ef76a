UPDATE inbound_reports
SET status = $2, kind = $3, problem = $4, num_records = $5, num_applied = $6, processed_at = now()
WHERE id = $1
