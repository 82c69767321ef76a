SELECT max_per_hour, pace_next_slot, now() AS now FROM mailings WHERE id = $1 FOR UPDATE
