-- Writes back a batch of outcomes for rows sender $10 still holds, with one event each, and
-- returns the ids of the rows written and the lease tokens read. The fence is that of
-- finish_outcomes.sql: the recipient's version is still the claimed one ($14), under the shard
-- lease claimed under ($13), which $10 still holds. A sender whose lease expired or moved on writes nothing, even
-- for rows nobody has recovered yet.
--
-- A final outcome ends the recipient; a retry, or a row handed back unsent, goes back into the
-- queue with its next attempt time. The recipient row is updated once, with the outcome (a row
-- handed back unsent keeps its state and its attempt count; only its version moves). A retry
-- of a cancelled mailing's row ends it `cancelled`.
WITH mailing AS (
    -- The key-share lock, taken once per mailing before any row is touched, orders this write
    -- against a concurrent cancel, which locks the mailing for update: either the cancel sees
    -- the rows put back here, or this sees the mailing cancelled.
    SELECT m.id, m.state
    FROM mailings m
    WHERE m.id = ANY ($12::bigint[])
    FOR KEY SHARE
), decided AS (
    SELECT o.*,
           o.state IN ('queued', 'deferred') AND m.state = 'cancelled' AS cancelled
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $11::bool[], $12::bigint[], $13::bigint[], $14::int[],
                $15::timestamptz[])
         AS o(id, state, next_attempt_at, code, enhanced, reply, reason, message_id, event_kind, suppress,
              mailing_id, token, version, claimed_at)
    JOIN mailing m ON m.id = o.mailing_id
), lease AS (
    -- The token of every shard (all 256 rows exist; element shard + 1), NULL where $10 holds
    -- no unexpired lease: read once, where a lease lookup per row cost about a tenth of the
    -- statement.
    SELECT ARRAY(SELECT CASE WHEN l.owner = $10 AND l.expires_at > now() THEN l.token END
                 FROM shard_leases l ORDER BY l.shard) AS tokens
), updated AS (
    -- A row handed back keeps its state of record: `deferred` exactly when an attempt was made,
    -- which its queue row records as a retry.
    UPDATE recipients r
    SET state = CASE WHEN h.cancelled THEN 'cancelled'
                     WHEN h.event_kind = 'released' THEN r.state
                     ELSE h.state END,
        version = r.version + 1,
        attempts = CASE WHEN h.event_kind = 'released' THEN r.attempts ELSE r.attempts + 1 END,
        first_attempt_at = CASE WHEN h.event_kind = 'released' THEN r.first_attempt_at
                                ELSE coalesce(r.first_attempt_at, h.claimed_at) END,
        next_attempt_at = coalesce(h.next_attempt_at, r.next_attempt_at),
        last_code = coalesce(h.code, r.last_code),
        last_enhanced = coalesce(h.enhanced, r.last_enhanced),
        last_reply = coalesce(h.reply, r.last_reply),
        reason = CASE WHEN h.cancelled THEN 'mailing cancelled'
                      WHEN h.event_kind = 'released' THEN r.reason
                      ELSE h.reason END,
        message_id = coalesce(h.message_id, r.message_id),
        updated_at = CASE WHEN h.event_kind = 'released' AND NOT h.cancelled THEN r.updated_at ELSE now() END
    FROM decided h, lease
    WHERE r.mailing_id = h.mailing_id AND r.id = h.id
      AND r.version = h.version
      AND lease.tokens[r.shard + 1] = h.token
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, r.state, r.shard, r.domain, r.next_attempt_at,
              h.event_kind, h.code, h.enhanced, coalesce(h.reply, h.reason) AS detail, r.email, h.suppress,
              h.reason, h.cancelled
), requeued AS (
    INSERT INTO queue (recipient_id, mailing_id, shard, domain, next_attempt_at, retry)
    SELECT id, mailing_id, shard, domain, coalesce(next_attempt_at, now()), state = 'deferred'
    FROM updated
    WHERE state IN ('queued', 'deferred')
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
    FROM (SELECT mailing_id, 'sending' AS state, -count(*) AS n FROM updated GROUP BY 1, 2
          UNION ALL
          SELECT mailing_id, state, count(*) FROM updated GROUP BY 1, 2) AS c
    GROUP BY c.mailing_id, c.state
    HAVING sum(c.n) <> 0
    ORDER BY c.mailing_id, c.state
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
)
-- The rows written, and the lease token of every shard as this statement saw it: a row not
-- written under a token that is not its shard's was fenced off; one whose token is still its
-- shard's had its outcome written already (a retried write-back), as under the current lease
-- only its holder writes.
SELECT coalesce(array_agg(id), '{}'), (SELECT tokens FROM lease)
FROM updated
