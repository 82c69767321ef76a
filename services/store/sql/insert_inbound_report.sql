INSERT INTO inbound_reports (source, envelope_from, envelope_to, raw, raw_sha256)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (raw_sha256) DO NOTHING
RETURNING id
