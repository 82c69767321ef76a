-- Where the queue entries of recipients $1 are now (their ctid), for a write-back that did not
-- find them where they were claimed.
SELECT recipient_id, ctid::text FROM queue WHERE recipient_id = ANY ($1::bigint[])
