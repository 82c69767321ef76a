-- Where the queue entries of recipients $1 are now (their ctid), for a write-back that did not
-- find them where they were claimed: only entries still held by sender $3 under the same claim
-- (claim times $2), so that a row since handed back and claimed again is left to its new claim.
SELECT q.recipient_id, q.ctid::text
FROM queue q
JOIN unnest($1::bigint[], $2::timestamptz[]) AS m(id, claimed_at)
  ON q.recipient_id = m.id AND q.claimed_at = m.claimed_at
WHERE q.lease_owner = $3
