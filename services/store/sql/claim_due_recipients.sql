-- Claims up to $3 due recipients of one sending mailing for sender $4, on the shards in $2 that
-- it holds an unexpired lease on, skipping destination domains in $6 (paused or backing off).
-- Each row records the lease's fencing token. Commits at once; no transaction is held across
-- SMTP. (The token is looked up per claimed row by primary key: joining the held leases into
-- the UPDATE made the planner repeat the row lookups for every held shard.)
WITH due AS (
    SELECT r.id
    FROM recipients r
    WHERE r.mailing_id = $1
      AND r.state IN ('queued', 'deferred')
      AND r.next_attempt_at <= now()
      AND r.shard = ANY (ARRAY(SELECT l.shard FROM shard_leases l
                               WHERE l.owner = $4 AND l.expires_at > now() AND l.shard = ANY ($2::smallint[])))
      AND r.domain <> ALL ($6::text[])
      AND EXISTS (SELECT 1 FROM mailings m WHERE m.id = $1 AND m.state = 'sending')
    ORDER BY r.next_attempt_at
    LIMIT $3
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE recipients r
SET state = 'sending',
    attempts = r.attempts + 1,
    first_attempt_at = coalesce(r.first_attempt_at, now()),
    lease_owner = $4,
    lease_token = (SELECT l.token FROM shard_leases l WHERE l.shard = r.shard AND l.owner = $4),
    lease_expires_at = now() + make_interval(secs => $5),
    updated_at = now()
FROM due
WHERE r.id = due.id
RETURNING r.id, r.email, r.external_id, r.variables, r.attempts,
          extract(epoch FROM (now() - r.first_attempt_at))::float8 AS seconds_since_first_attempt,
          EXISTS (SELECT 1 FROM suppressions s
                  WHERE s.tenant_id = r.tenant_id AND s.email = lower(r.email)) AS suppressed,
          r.shard, r.lease_token, r.domain
