-- `insert_staged_recipients.sql` for a chunk that met a unique violation there: another
-- transaction added one of its addresses at the same moment. `ON CONFLICT` waits for that
-- transaction and skips the address if it committed. Same result: the stage positions of the
-- rows queued and of the rows suppressed. Stage addresses are distinct, so the exact address
-- finds an inserted row's position.
WITH inserted AS (
    INSERT INTO recipients (mailing_id, tenant_id, email, domain, shard, external_id, variables,
                            state, reason)
    SELECT $1, $2, s.email, s.domain, s.shard, s.external_id, s.variables,
           CASE WHEN sup.email IS NULL THEN 'queued' ELSE 'suppressed' END,
           CASE WHEN sup.email IS NULL THEN NULL ELSE 'suppressed: ' || sup.reason END
    FROM recipient_stage s
    LEFT JOIN suppressions sup ON sup.tenant_id = $2 AND sup.email = lower(s.email)
    ON CONFLICT (mailing_id, lower(email)) DO NOTHING
    RETURNING id, email, domain, shard, state, next_attempt_at
), queued AS (
    INSERT INTO queue (recipient_id, mailing_id, shard, domain, next_attempt_at, recheck)
    SELECT id, $1, shard, domain, next_attempt_at, false FROM inserted WHERE state = 'queued'
)
SELECT coalesce(array_agg(s.position) FILTER (WHERE i.state = 'queued'), '{}'),
       coalesce(array_agg(s.position) FILTER (WHERE i.state = 'suppressed'), '{}')
FROM inserted i
JOIN recipient_stage s ON s.email = i.email
