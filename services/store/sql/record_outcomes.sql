-- Writes back a batch of outcomes for rows sender $10 still holds, with one event each. The
-- shard lease is the fence: a sender whose lease expired or moved on (token changed) writes
-- nothing, even for rows nobody has recovered yet.
WITH outcome AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $11::bool[])
         AS o(id, state, next_attempt_at, code, enhanced, reply, reason, message_id, event_kind, suppress)
), updated AS (
    UPDATE recipients r
    SET state = CASE WHEN o.state IN ('queued', 'deferred') AND m.state = 'cancelled'
                     THEN 'cancelled' ELSE o.state END,
        next_attempt_at = coalesce(o.next_attempt_at, r.next_attempt_at),
        attempts = CASE WHEN o.event_kind = 'released' THEN r.attempts - 1 ELSE r.attempts END,
        last_code = coalesce(o.code, r.last_code),
        last_enhanced = coalesce(o.enhanced, r.last_enhanced),
        last_reply = coalesce(o.reply, r.last_reply),
        reason = o.reason,
        message_id = coalesce(o.message_id, r.message_id),
        lease_owner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM outcome o, mailings m
    WHERE r.id = o.id AND m.id = r.mailing_id AND r.state = 'sending' AND r.lease_owner = $10
      AND EXISTS (SELECT 1 FROM shard_leases l
                  WHERE l.shard = r.shard AND l.owner = $10 AND l.token = r.lease_token
                    AND l.expires_at > now())
    RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, o.event_kind, o.code, o.enhanced,
              coalesce(o.reply, o.reason) AS detail, r.email, o.suppress, o.reason
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
SELECT count(*) FROM updated
