-- Cancels every recipient of mailing $1 still waiting in the queue. Rows a sender holds right
-- now (claimed, so no longer in the queue) are left to it: their outcome decides (a retry of a
-- cancelled mailing ends `cancelled`).
WITH dequeued AS (
    DELETE FROM queue
    WHERE mailing_id = $1
    RETURNING recipient_id, retry
), cancelled AS (
    UPDATE recipients r
    SET state = 'cancelled', reason = 'mailing cancelled', updated_at = now()
    FROM dequeued d
    WHERE r.mailing_id = $1 AND r.id = d.recipient_id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, r.state,
              CASE WHEN d.retry THEN 'deferred' ELSE 'queued' END AS old_state
), counted AS (
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.*
    FROM (SELECT array_agg(mailing_id) AS ids, array_agg(old_state) AS olds, array_agg(state) AS news
          FROM cancelled) AS a,
         mailing_count_changes(a.ids, a.olds, a.news, 0::smallint) AS c
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'cancelled', attempts, 'mailing cancelled' FROM cancelled
