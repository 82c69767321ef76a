-- Extends the leases this sender still holds; an expired lease is not renewed (another sender
-- may be taking it over), it must be acquired again with a new token.
UPDATE shard_leases
SET expires_at = now() + make_interval(secs => $2)
WHERE owner = $1 AND expires_at > now()
RETURNING shard, token
