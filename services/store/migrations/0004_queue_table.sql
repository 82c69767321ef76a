-- The delivery queue moves out of `recipients` into a narrow table of its own.
--
-- Before, claiming and writing back each updated the wide `recipients` row (address, merge
-- variables, history), and neither update could be HOT: `state` sat in the predicates of the
-- queue and in-flight indexes, so every update added entries to the primary key, the
-- lower(email) unique index and the paging index, twice per message.
--
-- Now a recipient waiting or in flight has one small `queue` row. The claim leases queue rows;
-- the recipient row is written once, when the attempt's outcome is known, and since no index of
-- `recipients` covers a column that outcome changes, that update is HOT when its page has room
-- (hence the fillfactor). A row leaves the queue when its recipient reaches a final state.
--
-- `recipients.state` keeps the state of record (`queued` or `deferred` while waiting); a
-- recipient whose queue row is leased is shown as `sending`.

CREATE TABLE queue (
    recipient_id    bigint      PRIMARY KEY,
    mailing_id      bigint      NOT NULL,
    shard           smallint    NOT NULL,
    domain          text        NOT NULL,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The recipient's state of record is `deferred` (an attempt was made), not `queued`; kept
    -- here so that counting the rows in flight by state needs no join.
    retry           boolean     NOT NULL DEFAULT false,
    -- Set while a sender holds the row: the sender, the shard lease's fencing token at the
    -- claim, and when the claim was made.
    lease_owner     uuid,
    lease_token     bigint,
    claimed_at      timestamptz
);

-- Rows in flight when this migration runs keep their lease; the recipient goes back to the
-- state it had before the claim, which also counted the attempt.
INSERT INTO queue (recipient_id, mailing_id, shard, domain, next_attempt_at, retry, lease_owner, lease_token,
                   claimed_at)
SELECT id, mailing_id, shard, domain, next_attempt_at, state = 'deferred' OR (state = 'sending' AND attempts > 1),
       lease_owner, lease_token, CASE WHEN state = 'sending' THEN updated_at END
FROM recipients
WHERE state IN ('queued', 'deferred', 'sending');

UPDATE recipients
SET state = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END,
    attempts = attempts - 1
WHERE state = 'sending';
-- No recipient is stored `sending` any more; its counters (now 0) go.
DELETE FROM mailing_counts WHERE state = 'sending';

-- Every row is inserted, updated and deleted within a campaign: vacuum and analyze after 2% of
-- it changed rather than the default 20%, so the planner and the indexes follow the churn.
ALTER TABLE queue SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Waiting rows by due time: what the claim walks (asserted in a test).
CREATE INDEX queue_due ON queue (mailing_id, next_attempt_at) WHERE lease_owner IS NULL;
-- Leased rows by shard: recovering a dead sender's rows, handing back idle shards, counting a
-- mailing's rows in flight.
CREATE INDEX queue_in_flight ON queue (shard, mailing_id) WHERE lease_owner IS NOT NULL;

DROP INDEX recipients_queue;
DROP INDEX recipients_in_flight;
ALTER TABLE recipients DROP COLUMN lease_owner, DROP COLUMN lease_token, DROP COLUMN lease_expires_at;
-- Room on each page for the one update most rows get (the outcome), so that it is HOT. With
-- 100 (the default) Postgres spent 43-51 µs per delivered message, with 45 36-44 µs.
ALTER TABLE recipients SET (fillfactor = 45);

-- No statement reads delivery events by mailing; the index cost an insert per event. A
-- recipient's history is read through `delivery_events_by_recipient`.
DROP INDEX delivery_events_by_mailing;

-- The foreign key from recipients to mailings checked every inserted row (1.3 µs of the ~15 µs
-- per row of AddRecipients). Nothing deletes mailings, and AddRecipients holds the mailing row
-- FOR SHARE for its whole transaction, so the mailing a row refers to exists.
ALTER TABLE recipients DROP CONSTRAINT recipients_mailing_id_fkey;
