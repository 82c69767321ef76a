INSERT INTO domain_settings (domain, max_per_minute, paused, updated_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (domain) DO UPDATE
SET max_per_minute = EXCLUDED.max_per_minute, paused = EXCLUDED.paused, updated_at = now()
RETURNING domain, max_per_minute, paused
