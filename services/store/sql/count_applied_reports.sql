-- Marks the reports that changed their recipient (a report carries one recipient's bounce or
-- complaint, so it changes one recipient at most).
UPDATE inbound_reports SET num_applied = 1 WHERE id = ANY($1::bigint[])
