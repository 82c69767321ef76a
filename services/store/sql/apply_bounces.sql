-- Moves sent recipients to bounced/complained with the report's detail (a complaint may also
-- follow a bounce), one event each, and suppresses addresses whose failure is permanent or who
-- complained. Rows already in the target state are left alone: duplicate reports are no-ops.
WITH report AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bool[],
                $8::bigint[])
         AS b(id, state, reason, status, code, diagnostic, suppress, mailing_id)
), reported AS (
    -- A report names its recipient by the recipients' key, mailing and id, as its VERP token
    -- carries them. A token of the earlier form names the id alone (messages sent before
    -- migration 11): its mailing is found by looking the id up in each mailing's key, for such
    -- reports only.
    SELECT DISTINCT coalesce(b.mailing_id, e.mailing_id) AS mailing_id, b.id
    FROM report b
    LEFT JOIN LATERAL (
        SELECT r.mailing_id
        FROM mailings m
        JOIN recipients r ON r.mailing_id = m.id AND r.id = b.id
        WHERE b.mailing_id IS NULL
        LIMIT 1
    ) AS e ON true
), locked AS (
    -- Locked first, so that the state read here is the one the update replaces (two reports
    -- for one recipient may be applied at once); the counters move from it.
    -- Only rows a report can change (sent or bounced; the state is re-checked on the row as a
    -- concurrent writer left it), in id order, so that two batches never lock crosswise and
    -- rows in flight are not touched.
    SELECT r.mailing_id, r.id, r.state
    FROM recipients r
    JOIN reported k ON r.mailing_id = k.mailing_id AND r.id = k.id
    WHERE r.state IN ('sent', 'bounced')
    ORDER BY r.id
    FOR UPDATE OF r
), updated AS (
    UPDATE recipients r
    SET state = b.state,
        reason = b.reason,
        last_enhanced = coalesce(b.status, r.last_enhanced),
        last_code = coalesce(b.code, r.last_code),
        last_reply = coalesce(b.diagnostic, r.last_reply),
        updated_at = now()
    FROM report b
    JOIN locked c ON c.id = b.id
    WHERE r.mailing_id = c.mailing_id AND r.id = c.id
      AND (c.state = 'sent' OR (c.state = 'bounced' AND b.state = 'complained'))
    RETURNING r.id, r.tenant_id, r.mailing_id, r.email, r.attempts, b.state, b.reason, b.status, b.code,
              b.diagnostic, b.suppress, c.state AS old_state
), counted AS (
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.*
    FROM (SELECT array_agg(mailing_id) AS ids, array_agg(old_state) AS olds, array_agg(state) AS news
          FROM updated) AS a,
         mailing_count_changes(a.ids, a.olds, a.news, 0::smallint) AS c
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
), events AS (
    INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, smtp_code, enhanced, detail)
    SELECT tenant_id, mailing_id, id, state, attempts, code, status, reason || coalesce(': ' || diagnostic, '')
    FROM updated
), suppressed AS (
    INSERT INTO suppressions (tenant_id, email, reason, note)
    SELECT DISTINCT ON (tenant_id, lower(email)) tenant_id, lower(email),
           CASE WHEN state = 'complained' THEN 'complaint' ELSE 'hard_bounce' END,
           reason || coalesce(': ' || diagnostic, '')
    FROM updated WHERE suppress
    ON CONFLICT (tenant_id, email) DO NOTHING
)
SELECT id, tenant_id, email, state FROM updated
