SELECT id FROM mailings WHERE state = 'sending' ORDER BY id
