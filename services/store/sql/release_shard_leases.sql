-- Hands shards back, but only those in which this sender has nothing in flight any more.
UPDATE shard_leases l
SET owner = NULL, expires_at = NULL
WHERE l.owner = $1 AND l.shard = ANY ($2::smallint[])
  AND NOT EXISTS (SELECT 1 FROM queue q
                  WHERE q.lease_owner = $1 AND q.shard = l.shard)
RETURNING l.shard
