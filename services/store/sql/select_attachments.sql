SELECT filename, content_type, content_id, content
FROM attachments WHERE mailing_id = $1 ORDER BY position
