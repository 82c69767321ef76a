SELECT id, email, external_id, variables FROM recipients WHERE mailing_id = $1 AND id = $2
