UPDATE mailings
SET state = 'sending', started_at = coalesce(started_at, now()), updated_at = now()
WHERE state = 'scheduled' AND send_at <= now()
RETURNING id
