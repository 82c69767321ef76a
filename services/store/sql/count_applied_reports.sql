-- Adds to each report the number of recipients it changed.
UPDATE inbound_reports r
SET num_applied = r.num_applied + a.n
FROM (SELECT id, sum(n)::int AS n FROM unnest($1::bigint[], $2::int[]) AS a(id, n) GROUP BY id) a
WHERE r.id = a.id
