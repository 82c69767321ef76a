SELECT max_per_hour FROM mailings WHERE id = $1
