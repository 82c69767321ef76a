-- Rows left in flight in shards sender $2 now holds, claimed under an earlier lease of the shard
-- (by a sender that died, stalled or restarted, or by this one before it lost the lease): retried,
-- with an event recording that the earlier attempt's outcome is unknown and a duplicate delivery
-- is possible. The attempt counts. A cancelled mailing's rows end `cancelled` instead.
WITH orphans AS (
    SELECT q.recipient_id AS id, q.mailing_id, q.claimed_at, m.state = 'cancelled' AS cancelled
    FROM queue q
    JOIN mailings m ON m.id = q.mailing_id
    WHERE q.lease_owner IS NOT NULL AND q.shard = ANY ($1::smallint[])
      AND NOT EXISTS (SELECT 1 FROM shard_leases l
                      WHERE l.shard = q.shard AND l.owner = $2 AND l.token = q.lease_token)
    -- Ordered against a concurrent cancel as in record_outcomes.sql.
    FOR UPDATE OF q SKIP LOCKED FOR KEY SHARE OF m
), dequeued AS (
    DELETE FROM queue q
    USING orphans o
    WHERE q.recipient_id = o.id AND o.cancelled
), requeued AS (
    UPDATE queue q
    SET lease_owner = NULL, lease_token = NULL, claimed_at = NULL, next_attempt_at = now(), retry = true
    FROM orphans o
    WHERE q.recipient_id = o.id AND NOT o.cancelled
), recovered AS (
    UPDATE recipients r
    SET state = CASE WHEN o.cancelled THEN 'cancelled' ELSE 'deferred' END,
        attempts = r.attempts + 1,
        first_attempt_at = coalesce(r.first_attempt_at, o.claimed_at),
        next_attempt_at = now(),
        reason = 'outcome unknown: the sender holding it stopped during the attempt',
        updated_at = now()
    FROM orphans o
    WHERE r.mailing_id = o.mailing_id AND r.id = o.id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, r.state, 'sending'::text AS old_state
), counted AS (
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.*
    FROM (SELECT array_agg(mailing_id) AS ids, array_agg(old_state) AS olds, array_agg(state) AS news
          FROM recovered) AS a,
         mailing_count_changes(a.ids, a.olds, a.news, 2::smallint) AS c
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'outcome-unknown', attempts,
       'the sender holding the recipient stopped during the attempt; a duplicate delivery is possible'
FROM recovered
