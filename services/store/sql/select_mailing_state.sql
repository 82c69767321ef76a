SELECT state FROM mailings WHERE tenant_id = $1 AND id = $2
