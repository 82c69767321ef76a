-- Claims up to $3 due recipients of one sending mailing for sender $4, on the shards in $2 that
-- it holds an unexpired lease on, skipping destination domains in $5 (paused or backing off),
-- in due order after the cursor ($6, $7): the due time and id of the last row this sender
-- claimed (the epoch to start from the front). Resuming there skips the rows in flight at
-- the front of the due order, which every claim would otherwise step over again.
-- Only the narrow queue row is written: it records the sender, the lease's fencing token and
-- the claim time (no index covers those, so the update is HOT when the page has room). The
-- recipient row is only read; the rows move to `sending` in the mailing's counters. Commits at
-- once; no transaction is held across SMTP. (The tokens are read once into an array: joining
-- the held leases into the UPDATE made the planner repeat the row lookups for every held
-- shard, and a lookup per row cost a tenth of the claim.)
--
-- No FOR UPDATE SKIP LOCKED: a shard's rows are claimed only by the sender holding its lease,
-- so claims hardly ever meet, and locking each row before updating it cost a WAL record and
-- about a fifth of the claim's time. Should two claims meet (a shard changing hands), the
-- second waits for the first and then re-checks that the row is still waiting and due, as the
-- first left it, so a row is never held twice at once.
WITH lease AS (
    -- The token of every shard (all 256 rows exist; element shard + 1), NULL where $4 holds no
    -- unexpired lease: read once. (Matching the shards in $2 against the lease table instead
    -- descended its index once per shard: about one buffer hit per claimed row.)
    SELECT ARRAY(SELECT CASE WHEN l.owner = $4 AND l.expires_at > now() THEN l.token END
                 FROM shard_leases l ORDER BY l.shard) AS tokens
), due AS (
    -- Rows are addressed by their place (ctid) from here on: the update below fetches each
    -- one directly instead of descending the primary key again.
    SELECT w.ctid
    FROM queue w, lease
    WHERE w.mailing_id = $1
      AND w.lease_owner IS NULL
      AND w.next_attempt_at <= now()
      AND (w.next_attempt_at, w.recipient_id) > ($6::timestamptz, $7::bigint)
      AND w.shard = ANY ($2::smallint[])
      AND lease.tokens[w.shard + 1] IS NOT NULL
      AND w.domain <> ALL ($5::text[])
      AND EXISTS (SELECT 1 FROM mailings m WHERE m.id = $1 AND m.state = 'sending')
    ORDER BY w.next_attempt_at, w.recipient_id
    LIMIT $3
), claimed AS (
    UPDATE queue q
    SET lease_owner = $4,
        lease_token = lease.tokens[q.shard + 1],
        claimed_at = now()
    FROM due, lease
    -- Re-checked on the row as a meeting claim or write-back left it (a row updated meanwhile
    -- is followed to its newest version): still waiting, still due, still this mailing's.
    WHERE q.ctid = due.ctid AND q.lease_owner IS NULL
      AND q.next_attempt_at <= now() AND q.mailing_id = $1
    -- The new version's place, which the write-back goes to directly.
    RETURNING q.recipient_id, q.mailing_id, q.shard, q.lease_token, q.domain, q.ctid::text AS queue_row,
              q.next_attempt_at, q.claimed_at,
              CASE WHEN q.retry THEN 'deferred' ELSE 'queued' END AS old_state
), counted AS (
    -- The counter changes as mailing_count_changes() computes them (one row per mailing and
    -- state that changes, in key order, so that two statements never wait on each other
    -- crosswise), grouped here directly: in EXPLAIN ANALYZE of a 1,024-row write-back the
    -- counters took 1.2 ms through the function (three arrays of the batch built and unnested)
    -- and 0.4 ms grouped.
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT c.mailing_id, c.state, 1::smallint, sum(c.n)::bigint
    FROM (SELECT mailing_id, old_state AS state, -count(*) AS n FROM claimed GROUP BY 1, 2
          UNION ALL
          SELECT mailing_id, 'sending', count(*) FROM claimed GROUP BY 1, 2) AS c
    GROUP BY c.mailing_id, c.state
    HAVING sum(c.n) <> 0
    ORDER BY c.mailing_id, c.state
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
)
SELECT r.id, r.email, r.external_id, r.variables, r.attempts + 1,
       extract(epoch FROM (now() - coalesce(r.first_attempt_at, now())))::float8 AS seconds_since_first_attempt,
       EXISTS (SELECT 1 FROM suppressions s
               WHERE s.tenant_id = r.tenant_id AND s.email = lower(r.email)) AS suppressed,
       c.shard, c.lease_token, c.domain, c.queue_row, c.next_attempt_at, c.claimed_at
FROM claimed c
JOIN recipients r ON r.mailing_id = c.mailing_id AND r.id = c.recipient_id
