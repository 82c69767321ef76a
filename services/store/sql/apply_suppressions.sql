-- Ends every recipient still waiting in the queue of an open mailing whose address is now on
-- its tenant's suppression list: the addresses $2 of tenants $1 (pairs), just suppressed in
-- this transaction, which holds the tenants' exclusive suppression locks (migration 10). Each
-- ends `suppressed` with the suppression's reason and an event. Returns how many ended so.
--
-- The queue row decides: whoever deletes it (this, a claim, a cancel) owns the recipient. A
-- recipient in flight has none and is left to its sender; should it come back into the queue,
-- its row is flagged for the claim to check again.
WITH added AS (
    SELECT DISTINCT s.tenant_id, s.email, s.reason
    FROM unnest($1::text[], $2::text[]) AS a(tenant_id, email)
    JOIN suppressions s ON s.tenant_id = a.tenant_id AND s.email = lower(a.email)
), waiting AS (
    -- Locked in due order, the order in which a claim takes them, so that the two do not wait
    -- on each other crosswise; a row a claim took meanwhile is skipped.
    SELECT q.recipient_id, q.mailing_id, a.reason
    FROM added a
    JOIN mailings m ON m.tenant_id = a.tenant_id AND m.state NOT IN ('completed', 'cancelled')
    JOIN recipients r ON r.mailing_id = m.id AND lower(r.email) = a.email
    JOIN queue q ON q.recipient_id = r.id
    WHERE r.state IN ('queued', 'deferred')
    ORDER BY q.mailing_id, q.next_attempt_at, q.recipient_id
    FOR UPDATE OF q
), dequeued AS (
    DELETE FROM queue q
    USING waiting w
    WHERE q.recipient_id = w.recipient_id
    RETURNING q.recipient_id, q.mailing_id, q.retry, w.reason
), updated AS (
    UPDATE recipients r
    SET state = 'suppressed',
        reason = 'suppressed: ' || d.reason,
        version = r.version + 1,
        updated_at = now()
    FROM dequeued d
    WHERE r.mailing_id = d.mailing_id AND r.id = d.recipient_id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, r.state, r.reason,
              CASE WHEN d.retry THEN 'deferred' ELSE 'queued' END AS old_state
), counted AS (
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.*
    FROM (SELECT array_agg(mailing_id) AS ids, array_agg(old_state) AS olds, array_agg(state) AS news
          FROM updated) AS a,
         mailing_count_changes(a.ids, a.olds, a.news, 0::smallint) AS c
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
), events AS (
    INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
    SELECT tenant_id, mailing_id, id, 'suppressed', attempts, reason FROM updated
)
SELECT count(*) FROM updated
