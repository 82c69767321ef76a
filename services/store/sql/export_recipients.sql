SELECT email, external_id, state, attempts, last_code, last_enhanced, last_reply, reason, updated_at
FROM recipients
WHERE mailing_id = $1 AND ($2::text IS NULL OR state = $2)
ORDER BY id
