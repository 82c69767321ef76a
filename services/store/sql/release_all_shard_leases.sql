UPDATE shard_leases SET owner = NULL, expires_at = NULL WHERE owner = $1
