INSERT INTO mailings (tenant_id, name, from_email, from_name, reply_to_email, reply_to_name,
                      subject_template, html_template, text_template, headers, tags)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id
