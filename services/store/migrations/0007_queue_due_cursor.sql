-- The index of due rows gets the recipient id as a last column, so that a sender can resume
-- claiming after the last row it claimed, (next_attempt_at, recipient_id) > (its cursor),
-- instead of stepping again over every row in flight at the front of the due order, a heap
-- check each: about two thousand rows per claim with two senders.
DROP INDEX queue_due;
CREATE INDEX queue_due ON queue (mailing_id, next_attempt_at, recipient_id);
