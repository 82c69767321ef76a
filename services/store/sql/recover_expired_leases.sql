-- Rows a sender claimed and never wrote back (it died or stalled past its lease): retry them,
-- recording that the first attempt's outcome is unknown and a duplicate is possible.
WITH stale AS (
    SELECT id FROM recipients
    WHERE state = 'sending' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), recovered AS (
    UPDATE recipients r
    SET state = CASE WHEN m.state = 'cancelled' THEN 'cancelled' ELSE 'deferred' END,
        next_attempt_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL,
        reason = 'outcome unknown: sender lease expired during the attempt',
        updated_at = now()
    FROM stale, mailings m
    WHERE r.id = stale.id AND m.id = r.mailing_id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'outcome-unknown', attempts,
       'sender lease expired during the attempt; a duplicate delivery is possible'
FROM recovered
