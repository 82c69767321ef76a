SELECT id FROM mailings WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3
