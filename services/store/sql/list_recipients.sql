SELECT id, email, external_id, state, attempts, last_code, last_enhanced, last_reply, reason,
       next_attempt_at, updated_at, variables
FROM recipients
WHERE mailing_id = $1 AND id > $2 AND ($3::text IS NULL OR state = $3)
ORDER BY id
LIMIT $4
