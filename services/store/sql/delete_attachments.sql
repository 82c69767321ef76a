DELETE FROM attachments WHERE mailing_id = $1
