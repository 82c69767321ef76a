-- Per-state counts, kept by the statements that move recipients (in parts, summed here); rows
-- a sender holds right now are counted as `sending`.
SELECT state, sum(n)::bigint FROM mailing_counts WHERE mailing_id = $1 GROUP BY state
