-- After recovery (in its transaction): deletes the claim batches that recovery looked at (an
-- entry in shards $1 under a token other than sender $2's lease, or a batch of $2's own that
-- it no longer tracks, see recover_orphaned_rows.sql) in which nothing is in flight any more
-- (every recipient's version has moved on since the claim). A batch of a sender still running
-- keeps its rows in flight on the shards it holds; that sender deletes it when they are
-- written.
WITH lease AS (
    SELECT ARRAY(SELECT CASE WHEN l.owner = $2 AND l.expires_at > now() THEN l.token END
                 FROM shard_leases l ORDER BY l.shard) AS tokens
)
DELETE FROM claim_batches b
USING lease
WHERE (EXISTS (SELECT 1 FROM unnest(b.shards) AS s(shard)
               WHERE s.shard = ANY ($1::smallint[])
                 AND lease.tokens[s.shard + 1] IS NOT NULL
                 AND b.tokens[s.shard + 1] IS DISTINCT FROM lease.tokens[s.shard + 1])
       OR (b.owner = $2 AND b.id <> ALL ($3::bigint[]) AND b.claimed_at < now() - interval '1 minute'))
  AND NOT EXISTS (SELECT 1
                  FROM unnest(b.ids, b.versions) AS e(id, version)
                  JOIN recipients r ON r.mailing_id = b.mailing_id AND r.id = e.id AND r.version = e.version)
