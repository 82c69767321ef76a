-- Takes up to $3 free or expired shards for sender $1 with a new fencing token each.
WITH free AS (
    SELECT shard FROM shard_leases
    WHERE owner IS NULL OR expires_at IS NULL OR expires_at <= now()
    ORDER BY shard
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE shard_leases l
SET owner = $1, token = l.token + 1, expires_at = now() + make_interval(secs => $2)
FROM free
WHERE l.shard = free.shard
RETURNING l.shard, l.token
