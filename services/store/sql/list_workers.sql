SELECT w.id, w.hostname, w.started_at, w.heartbeat_at,
       count(l.shard) FILTER (WHERE l.expires_at > now()) AS num_shards
FROM workers w
LEFT JOIN shard_leases l ON l.owner = w.id
WHERE w.heartbeat_at > now() - make_interval(secs => $1)
GROUP BY w.id
ORDER BY w.started_at
