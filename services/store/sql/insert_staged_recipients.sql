-- Inserts the staged rows of one AddRecipients chunk whose addresses the mailing does not have
-- yet; an address on the tenant's suppression list is recorded `suppressed`, every other new
-- row also enters the queue. Returns the stage positions of the rows queued and of the rows
-- suppressed; a position in neither was a duplicate.
--
-- A plain insert behind an anti-join: cheaper than `ON CONFLICT` (no speculative insertion, one
-- WAL record less per row). An address that another transaction adds at the same moment makes
-- it fail with a unique violation; the caller then runs the chunk again through
-- `insert_staged_recipients_tolerant.sql`.
WITH fresh AS MATERIALIZED (
    SELECT s.position, s.email, s.domain, s.shard, s.external_id, s.variables,
           sup.email IS NOT NULL AS suppressed, sup.reason
    FROM recipient_stage s
    LEFT JOIN suppressions sup ON sup.tenant_id = $2 AND sup.email = lower(s.email)
    -- A lateral probe per row of the unique index; as `NOT EXISTS` the generic plan hashes
    -- every recipient of the mailing, for each chunk.
    LEFT JOIN LATERAL (
        SELECT true AS present FROM recipients r
        WHERE r.mailing_id = $1 AND lower(r.email) = lower(s.email)
        LIMIT 1
    ) known ON true
    WHERE known.present IS NULL
), inserted AS (
    INSERT INTO recipients (mailing_id, tenant_id, email, domain, shard, external_id, variables,
                            state, reason)
    SELECT $1, $2, email, domain, shard, external_id, variables,
           CASE WHEN suppressed THEN 'suppressed' ELSE 'queued' END,
           CASE WHEN suppressed THEN 'suppressed: ' || reason END
    FROM fresh
    RETURNING id, domain, shard, state, next_attempt_at
), queued AS (
    -- Checked against the suppression list just now, under the tenant's shared suppression
    -- lock (migration 10): the claim need not check again.
    INSERT INTO queue (recipient_id, mailing_id, shard, domain, next_attempt_at, recheck)
    SELECT id, $1, shard, domain, next_attempt_at, false FROM inserted WHERE state = 'queued'
)
SELECT coalesce(array_agg(position) FILTER (WHERE NOT suppressed), '{}'),
       coalesce(array_agg(position) FILTER (WHERE suppressed), '{}')
FROM fresh
