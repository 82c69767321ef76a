SELECT id, email, external_id, variables FROM recipients
WHERE mailing_id = $1 AND state = 'queued' AND id > $3 AND NOT (variables ?& $2::text[])
ORDER BY id
LIMIT $4
