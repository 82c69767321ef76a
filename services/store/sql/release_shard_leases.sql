-- Hands shards back, but only those in which this sender has nothing in flight any more: no
-- entry of its claim batches whose recipient still has the version the claim read.
UPDATE shard_leases l
SET owner = NULL, expires_at = NULL
WHERE l.owner = $1 AND l.shard = ANY ($2::smallint[])
  AND l.shard <> ALL (ARRAY(SELECT DISTINCT e.shard
                            FROM claim_batches b
                            CROSS JOIN LATERAL unnest(b.ids, b.shards, b.versions) AS e(id, shard, version)
                            JOIN recipients r ON r.mailing_id = b.mailing_id AND r.id = e.id
                                             AND r.version = e.version
                            WHERE b.owner = $1 AND e.shard = ANY ($2::smallint[])))
RETURNING l.shard
