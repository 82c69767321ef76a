SELECT state, send_at FROM mailings WHERE tenant_id = $1 AND id = $2 FOR SHARE
