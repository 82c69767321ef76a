-- Recipients still in the queue (a recipient in flight keeps its state of record).
SELECT coalesce(sum(n), 0)::bigint FROM mailing_counts
WHERE mailing_id = $1 AND state IN ('queued', 'deferred')
