INSERT INTO attachments (mailing_id, position, filename, content_type, content_id, content)
VALUES ($1, $2, $3, $4, $5, $6)
