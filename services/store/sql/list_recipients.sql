-- A recipient whose queue row a sender holds shows as `sending`.
SELECT r.id, r.email, r.external_id, v.state, r.attempts, r.last_code, r.last_enhanced, r.last_reply,
       r.reason, r.next_attempt_at, r.updated_at, r.variables
FROM recipients r
LEFT JOIN queue q ON q.recipient_id = r.id AND q.lease_owner IS NOT NULL
CROSS JOIN LATERAL (SELECT CASE WHEN q.recipient_id IS NULL THEN r.state ELSE 'sending' END AS state) v
WHERE r.mailing_id = $1 AND r.id > $2 AND ($3::text IS NULL OR v.state = $3)
ORDER BY r.id
LIMIT $4
