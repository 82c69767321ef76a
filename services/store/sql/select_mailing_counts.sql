-- Per-state counts from the trigger-kept counters, with the recipients a sender holds right now
-- moved from their state of record (`queued` or `deferred`) to `sending`.
WITH in_flight AS (
    SELECT CASE WHEN retry THEN 'deferred' ELSE 'queued' END AS state, count(*) AS n
    FROM queue
    WHERE mailing_id = $1 AND lease_owner IS NOT NULL
    GROUP BY retry
)
SELECT c.state, c.n - coalesce(f.n, 0) AS n
FROM mailing_counts c
LEFT JOIN in_flight f ON f.state = c.state
WHERE c.mailing_id = $1
UNION ALL
SELECT 'sending', sum(n)::bigint FROM in_flight HAVING sum(n) > 0
