-- Cancels every recipient of mailing $1 still waiting in the queue. Rows a sender holds right
-- now are left to it: their outcome decides (a retry of a cancelled mailing ends `cancelled`).
WITH dequeued AS (
    DELETE FROM queue
    WHERE mailing_id = $1 AND lease_owner IS NULL
    RETURNING recipient_id
), cancelled AS (
    UPDATE recipients r
    SET state = 'cancelled', reason = 'mailing cancelled', updated_at = now()
    FROM dequeued d
    WHERE r.id = d.recipient_id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'cancelled', attempts, 'mailing cancelled' FROM cancelled
