UPDATE mailings SET state = 'completed', completed_at = now(), updated_at = now()
WHERE id = $1 AND state = 'sending'
