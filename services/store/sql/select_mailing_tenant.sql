SELECT tenant_id FROM mailings WHERE id = $1
