SELECT id, received_at, source, envelope_from, envelope_to, status, kind, problem, num_records, num_applied,
       octet_length(raw)
FROM inbound_reports
WHERE id < $1 AND ($2::text IS NULL OR status = $2)
ORDER BY id DESC
LIMIT $3
