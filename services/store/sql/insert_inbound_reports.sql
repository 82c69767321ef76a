-- Stores a batch of reports raw, already judged. A report whose bytes were stored before is
-- skipped (it comes back from nothing in RETURNING).
INSERT INTO inbound_reports
    (source, envelope_from, envelope_to, raw, raw_sha256, status, kind, problem, num_records, processed_at)
SELECT source, envelope_from, envelope_to, raw, raw_sha256, status, kind, problem, num_records, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::text[], $7::text[], $8::text[],
            $9::int[])
     AS r(source, envelope_from, envelope_to, raw, raw_sha256, status, kind, problem, num_records)
ON CONFLICT (raw_sha256) DO NOTHING
RETURNING id, raw_sha256
