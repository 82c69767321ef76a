SELECT id FROM mailings WHERE id = $1 AND state = 'sending' FOR UPDATE SKIP LOCKED
