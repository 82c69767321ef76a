INSERT INTO workers (id, hostname) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
