-- Writes back a batch of outcomes for rows sender $10 still holds, with one event each, and
-- returns the ids of the rows written. The shard lease is the fence: a sender whose lease
-- expired or moved on (token changed) writes nothing, even for rows nobody has recovered yet.
--
-- A final outcome removes the queue row; a retry hands it back with its next attempt time. The
-- recipient row is updated once, with the outcome (a row handed back unsent keeps its state and
-- its attempt count). A retry of a cancelled mailing's row ends it `cancelled`.
WITH mailing AS (
    -- The key-share lock, taken once per mailing before any queue row is touched, orders this
    -- write against a concurrent cancel, which locks the mailing for update: either the cancel
    -- sees the rows handed back here, or this sees the mailing cancelled.
    SELECT m.id, m.state
    FROM mailings m
    WHERE m.id = ANY ($12::bigint[])
    FOR KEY SHARE
), decided AS (
    SELECT o.*,
           o.state IN ('queued', 'deferred') AND m.state = 'cancelled' AS cancelled,
           o.state IN ('queued', 'deferred') AND m.state <> 'cancelled' AS requeue
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $11::bool[], $12::bigint[], $13::text[])
         AS o(id, state, next_attempt_at, code, enhanced, reply, reason, message_id, event_kind, suppress,
              mailing_id, queue_row)
    JOIN mailing m ON m.id = o.mailing_id
), lease AS (
    -- The token of every shard (all 256 rows exist; element shard + 1), NULL where $10 holds
    -- no unexpired lease: read once, where a lease lookup per row cost about a tenth of the
    -- statement.
    SELECT ARRAY(SELECT CASE WHEN l.owner = $10 AND l.expires_at > now() THEN l.token END
                 FROM shard_leases l ORDER BY l.shard) AS tokens
), dequeued AS (
    -- Only a row this sender holds under its current lease of the row's shard is written: the
    -- conditions are checked on the row as the delete finds it (no lock and no read
    -- beforehand; a row recovered meanwhile by the shard's next owner is left alone). The row
    -- is fetched where the claim left it (its ctid), without a primary-key descent: a row
    -- since changed by anyone else is no longer this sender's anyway, and one moved by a table
    -- rewrite is not found here and is looked up again by the caller.
    DELETE FROM queue q
    USING decided d, lease
    WHERE q.ctid = d.queue_row::tid AND q.recipient_id = d.id AND q.mailing_id = d.mailing_id
      AND NOT d.requeue
      AND q.lease_owner = $10
      AND q.lease_token = lease.tokens[q.shard + 1]
    RETURNING d.*, q.claimed_at, q.retry
), requeued AS (
    UPDATE queue q
    SET lease_owner = NULL,
        lease_token = NULL,
        -- claimed_at keeps the last claim's time (RETURNING gives the new values, and the
        -- recipient's first attempt time is taken from it); it means nothing while unleased.
        next_attempt_at = coalesce(d.next_attempt_at, q.next_attempt_at),
        retry = q.retry OR d.event_kind <> 'released'
    FROM decided d, lease
    WHERE q.ctid = d.queue_row::tid AND q.recipient_id = d.id AND q.mailing_id = d.mailing_id
      AND d.requeue
      AND q.lease_owner = $10
      AND q.lease_token = lease.tokens[q.shard + 1]
    -- For a row handed back unsent, retry is unchanged, so the new value is the old one.
    RETURNING d.*, q.claimed_at, q.retry
), written AS (
    -- The rows actually written, with the recipient's state afterwards: a row handed back
    -- unsent keeps its state of record (`deferred` exactly when its queue row is a retry).
    SELECT w.*,
           CASE WHEN w.cancelled THEN 'cancelled'
                WHEN w.event_kind = 'released' THEN CASE WHEN w.retry THEN 'deferred' ELSE 'queued' END
                ELSE w.state END AS new_state
    FROM (SELECT * FROM dequeued UNION ALL SELECT * FROM requeued) AS w
), updated AS (
    UPDATE recipients r
    SET state = CASE WHEN h.cancelled THEN 'cancelled' ELSE h.state END,
        attempts = CASE WHEN h.event_kind = 'released' THEN r.attempts ELSE r.attempts + 1 END,
        first_attempt_at = CASE WHEN h.event_kind = 'released' THEN r.first_attempt_at
                                ELSE coalesce(r.first_attempt_at, h.claimed_at) END,
        next_attempt_at = coalesce(h.next_attempt_at, r.next_attempt_at),
        last_code = coalesce(h.code, r.last_code),
        last_enhanced = coalesce(h.enhanced, r.last_enhanced),
        last_reply = coalesce(h.reply, r.last_reply),
        reason = CASE WHEN h.cancelled THEN 'mailing cancelled' ELSE h.reason END,
        message_id = coalesce(h.message_id, r.message_id),
        updated_at = now()
    FROM written h
    WHERE r.mailing_id = h.mailing_id AND r.id = h.id AND (h.event_kind <> 'released' OR h.cancelled)
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, h.event_kind, h.code, h.enhanced,
              coalesce(h.reply, h.reason) AS detail, r.email, h.suppress, h.reason
), suppressed AS (
    -- A permanent rejection of the address itself (user unknown, …) at SMTP time suppresses
    -- it, as a hard bounce report would.
    INSERT INTO suppressions (tenant_id, email, reason, note)
    SELECT DISTINCT ON (tenant_id, lower(email)) tenant_id, lower(email), 'hard_bounce', reason || ': ' || detail
    FROM updated WHERE suppress
    ON CONFLICT (tenant_id, email) DO NOTHING
), events AS (
    INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, smtp_code,
                                 enhanced, detail)
    SELECT tenant_id, mailing_id, id, event_kind, attempts, code, enhanced, detail
    FROM updated
    WHERE event_kind <> 'released'
), counted AS (
    -- Every row written leaves `sending`. Grouped directly, as in claim_due_recipients.sql.
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.mailing_id, c.state, 2::smallint, sum(c.n)::bigint
    FROM (SELECT mailing_id, 'sending' AS state, -count(*) AS n FROM written GROUP BY 1, 2
          UNION ALL
          SELECT mailing_id, new_state, count(*) FROM written GROUP BY 1, 2) AS c
    GROUP BY c.mailing_id, c.state
    HAVING sum(c.n) <> 0
    ORDER BY c.mailing_id, c.state
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
)
SELECT coalesce(array_agg(id), '{}') FROM written
