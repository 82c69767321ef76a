WITH cancelled AS (
    UPDATE recipients
    SET state = 'cancelled', reason = 'mailing cancelled', updated_at = now()
    WHERE mailing_id = $1 AND state IN ('queued', 'deferred')
    RETURNING id, tenant_id, mailing_id, attempts
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'cancelled', attempts, 'mailing cancelled' FROM cancelled
