-- Hands shards back, but only those in which this sender has nothing in flight any more. (The
-- shards with rows in flight are found in one read of the queue, which has no index of leased
-- rows: claims write none.)
UPDATE shard_leases l
SET owner = NULL, expires_at = NULL
WHERE l.owner = $1 AND l.shard = ANY ($2::smallint[])
  AND l.shard <> ALL (ARRAY(SELECT DISTINCT q.shard FROM queue q
                            WHERE q.lease_owner = $1 AND q.shard = ANY ($2::smallint[])))
RETURNING l.shard
