SELECT id, max_per_hour IS NOT NULL AS paced FROM mailings WHERE state = 'sending' ORDER BY id
