-- A recipient not final and not in the queue is in flight: it shows as `sending`.
SELECT r.email, r.external_id, v.state, r.attempts, r.last_code, r.last_enhanced, r.last_reply, r.reason,
       r.updated_at
FROM recipients r
LEFT JOIN queue q ON q.recipient_id = r.id
CROSS JOIN LATERAL (SELECT CASE WHEN r.state IN ('queued', 'deferred') AND q.recipient_id IS NULL THEN 'sending'
                            ELSE r.state END AS state) v
WHERE r.mailing_id = $1 AND ($2::text IS NULL OR v.state = $2)
ORDER BY r.id
