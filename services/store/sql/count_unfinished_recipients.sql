-- Recipients not yet final: waiting in the queue or in flight.
SELECT coalesce(sum(n), 0)::bigint FROM mailing_counts
WHERE mailing_id = $1 AND state IN ('queued', 'deferred', 'sending')
