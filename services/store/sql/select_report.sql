-- The columns of list_reports.sql, then the raw bytes.
SELECT id, received_at, source, envelope_from, envelope_to, status, kind, problem, num_records, num_applied,
       octet_length(raw), raw
FROM inbound_reports
WHERE id = $1
