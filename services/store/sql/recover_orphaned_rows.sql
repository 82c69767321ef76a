-- Rows left in flight in shards sender $2 now holds, claimed under an earlier lease of the shard
-- (by a sender that died, stalled or restarted, or by this one before it lost the lease): retried,
-- with an event recording that the earlier attempt's outcome is unknown and a duplicate delivery
-- is possible. The attempt counts. A cancelled mailing's rows end `cancelled` instead.
--
-- They are the entries of claim batches under a token that is not the shard's now, whose
-- recipient still has the version the claim read: no outcome was written for that attempt.
-- So are those of a batch of $2's own, under its current token, that $2 no longer tracks
-- (not among $3) and that is older than a minute: a claim that committed but whose reply was
-- lost, or rows the sender could not hand back; nothing of it would ever be written.
WITH lease AS (
    SELECT ARRAY(SELECT CASE WHEN l.owner = $2 AND l.expires_at > now() THEN l.token END
                 FROM shard_leases l ORDER BY l.shard) AS tokens
), entries AS (
    SELECT b.mailing_id, b.claimed_at, e.id, e.version
    FROM claim_batches b, lease, unnest(b.ids, b.shards, b.versions) AS e(id, shard, version)
    WHERE e.shard = ANY ($1::smallint[])
      AND lease.tokens[e.shard + 1] IS NOT NULL
      AND (b.tokens[e.shard + 1] IS DISTINCT FROM lease.tokens[e.shard + 1]
           OR (b.owner = $2 AND b.id <> ALL ($3::bigint[]) AND b.claimed_at < now() - interval '1 minute'))
), orphans AS (
    -- Locked, and the version re-checked on the row as a concurrent write left it. Ordered
    -- against a concurrent cancel as in record_outcomes.sql. Rows or mailings locked by others
    -- (a cancel in progress) are skipped rather than waited for: this runs in the lease
    -- keeper's round, which must not stall renewals; the next sweep takes them.
    SELECT r.id, r.mailing_id, e.claimed_at, m.state = 'cancelled' AS cancelled
    FROM entries e
    JOIN recipients r ON r.mailing_id = e.mailing_id AND r.id = e.id AND r.version = e.version
    JOIN mailings m ON m.id = e.mailing_id
    FOR UPDATE OF r SKIP LOCKED FOR KEY SHARE OF m SKIP LOCKED
), recovered AS (
    UPDATE recipients r
    SET state = CASE WHEN o.cancelled THEN 'cancelled' ELSE 'deferred' END,
        version = r.version + 1,
        attempts = r.attempts + 1,
        first_attempt_at = coalesce(r.first_attempt_at, o.claimed_at),
        next_attempt_at = now(),
        reason = 'outcome unknown: the sender holding it stopped during the attempt',
        updated_at = now()
    FROM orphans o
    WHERE r.mailing_id = o.mailing_id AND r.id = o.id
    RETURNING r.id, r.tenant_id, r.mailing_id, r.shard, r.domain, r.attempts, r.state, 'sending'::text AS old_state
), requeued AS (
    INSERT INTO queue (recipient_id, mailing_id, shard, domain, next_attempt_at, retry)
    SELECT id, mailing_id, shard, domain, now(), true
    FROM recovered
    WHERE state = 'deferred'
), counted AS (
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.*
    FROM (SELECT array_agg(mailing_id) AS ids, array_agg(old_state) AS olds, array_agg(state) AS news
          FROM recovered) AS a,
         mailing_count_changes(a.ids, a.olds, a.news, 2::smallint) AS c
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
)
INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
SELECT tenant_id, mailing_id, id, 'outcome-unknown', attempts,
       'the sender holding the recipient stopped during the attempt; a duplicate delivery is possible'
FROM recovered
