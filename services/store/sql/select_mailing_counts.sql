SELECT state, n FROM mailing_counts WHERE mailing_id = $1
