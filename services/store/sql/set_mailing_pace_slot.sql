UPDATE mailings SET pace_next_slot = $2 WHERE id = $1
