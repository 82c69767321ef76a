UPDATE mailings
SET name = $3, from_email = $4, from_name = $5, reply_to_email = $6, reply_to_name = $7,
    subject_template = $8, html_template = $9, text_template = $10, headers = $11, tags = $12,
    updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND state = 'draft'
RETURNING id
