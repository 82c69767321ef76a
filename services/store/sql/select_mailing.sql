SELECT id, tenant_id, name, from_email, from_name, reply_to_email, reply_to_name,
       subject_template, html_template, text_template, headers, tags, state,
       send_at, created_at, started_at, completed_at, max_per_hour
FROM mailings WHERE tenant_id = $1 AND id = $2
