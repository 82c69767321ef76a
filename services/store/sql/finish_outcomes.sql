-- Writes back a batch of final outcomes (sent, failed, expired, suppressed, skipped) for rows
-- sender $9 still holds, with one event each, and returns the ids of the rows written and the
-- lease tokens read. The common case of `record_outcomes.sql`, without what only a row handed
-- back needs: a final outcome puts nothing back in the queue, so neither the mailing's lock nor
-- its state matters here.
--
-- The fence, checked on the recipient row as the update finds it: its version is still the
-- one the claim read ($13), so nothing has written this attempt yet (a retried write-back, or
-- recovery by the shard's next holder), and the shard's lease is still the one claimed under
-- ($12), held by $9 and unexpired. The claim already removed the queue row.
WITH lease AS (
    SELECT ARRAY(SELECT CASE WHEN l.owner = $9 AND l.expires_at > now() THEN l.token END
                 FROM shard_leases l ORDER BY l.shard) AS tokens
), updated AS (
    UPDATE recipients r
    SET state = h.state,
        version = r.version + 1,
        attempts = r.attempts + 1,
        first_attempt_at = coalesce(r.first_attempt_at, h.claimed_at),
        last_code = coalesce(h.code, r.last_code),
        last_enhanced = coalesce(h.enhanced, r.last_enhanced),
        last_reply = coalesce(h.reply, r.last_reply),
        reason = h.reason,
        message_id = coalesce(h.message_id, r.message_id),
        updated_at = now()
    FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $10::bool[], $11::bigint[], $12::bigint[], $13::int[], $14::timestamptz[])
         AS h(id, state, code, enhanced, reply, reason, message_id, event_kind, suppress, mailing_id, token,
              version, claimed_at),
         lease
    WHERE r.mailing_id = h.mailing_id AND r.id = h.id
      AND r.version = h.version
      AND lease.tokens[r.shard + 1] = h.token
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, r.state, h.event_kind, h.code, h.enhanced,
              coalesce(h.reply, h.reason) AS detail, r.email, h.suppress, h.reason
), suppressed AS (
    -- As in record_outcomes.sql: a permanent rejection of the address itself suppresses it.
    INSERT INTO suppressions (tenant_id, email, reason, note)
    SELECT DISTINCT ON (tenant_id, lower(email)) tenant_id, lower(email), 'hard_bounce', reason || ': ' || detail
    FROM updated WHERE suppress
    ON CONFLICT (tenant_id, email) DO NOTHING
), events AS (
    INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, smtp_code,
                                 enhanced, detail)
    SELECT tenant_id, mailing_id, id, event_kind, attempts, code, enhanced, detail
    FROM updated
), counted AS (
    -- Grouped directly, as in claim_due_recipients.sql.
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
