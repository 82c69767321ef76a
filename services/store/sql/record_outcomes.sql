-- Writes back a batch of outcomes for rows sender $10 still holds, with one event each. The
-- shard lease is the fence: a sender whose lease expired or moved on (token changed) writes
-- nothing, even for rows nobody has recovered yet.
--
-- A final outcome removes the queue row; a retry hands it back with its next attempt time. The
-- recipient row is updated once, with the outcome (a row handed back unsent keeps its state and
-- its attempt count). A retry of a cancelled mailing's row ends it `cancelled`.
WITH outcome AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $11::bool[])
         AS o(id, state, next_attempt_at, code, enhanced, reply, reason, message_id, event_kind, suppress)
), held AS (
    SELECT o.*, q.claimed_at,
           o.state IN ('queued', 'deferred') AND m.state = 'cancelled' AS cancelled,
           o.state IN ('queued', 'deferred') AND m.state <> 'cancelled' AS requeue
    FROM outcome o
    JOIN queue q ON q.recipient_id = o.id
    JOIN mailings m ON m.id = q.mailing_id
    WHERE q.lease_owner = $10
      -- A scalar subquery, not EXISTS: as a semi-join the planner drove the statement from the
      -- held leases and rescanned the outcomes for every row in flight.
      AND q.lease_token = (SELECT l.token FROM shard_leases l
                           WHERE l.shard = q.shard AND l.owner = $10 AND l.expires_at > now())
    -- The key-share lock on the mailing orders this write against a concurrent cancel, which
    -- locks the mailing for update: either the cancel sees the rows handed back here, or this
    -- sees the mailing cancelled.
    FOR UPDATE OF q FOR KEY SHARE OF m
), dequeued AS (
    DELETE FROM queue q
    USING held h
    WHERE q.recipient_id = h.id AND NOT h.requeue
), requeued AS (
    UPDATE queue q
    SET lease_owner = NULL,
        lease_token = NULL,
        claimed_at = NULL,
        next_attempt_at = coalesce(h.next_attempt_at, q.next_attempt_at),
        retry = q.retry OR h.event_kind <> 'released'
    FROM held h
    WHERE q.recipient_id = h.id AND h.requeue
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
    FROM held h
    WHERE r.id = h.id AND (h.event_kind <> 'released' OR h.cancelled)
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
)
SELECT count(*) FROM held
