-- Rows left `sending` in shards sender $2 now holds, claimed under an earlier lease of the shard
-- (by a sender that died, stalled or restarted, or by this one before it lost the lease): retried,
-- with an event recording that the earlier attempt's outcome is unknown and a duplicate delivery
-- is possible.
WITH orphans AS (
    SELECT r.id FROM recipients r
    WHERE r.state = 'sending' AND r.shard = ANY ($1::smallint[])
      AND NOT EXISTS (SELECT 1 FROM shard_leases l
                      WHERE l.shard = r.shard AND l.owner = $2 AND l.token = r.lease_token)
    FOR UPDATE OF r SKIP LOCKED
), recovered AS (
    UPDATE recipients r
    SET state = CASE WHEN m.state = 'cancelled' THEN 'cancelled' ELSE 'deferred' END,
        next_attempt_at = now(),
        lease_owner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        reason = 'outcome unknown: the sender holding it stopped during the attempt',
        updated_at = now()
    FROM orphans, mailings m
    WHERE r.id = orphans.id AND m.id = r.mailing_id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'outcome-unknown', attempts,
       'the sender holding the recipient stopped during the attempt; a duplicate delivery is possible'
FROM recovered
