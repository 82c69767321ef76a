-- A claim no longer writes each queue row it takes; it deletes them and records the batch in
-- one row of `claim_batches`: the sender, the shard lease tokens it claimed under, and the
-- recipients claimed, each with its shard and its `version` at the claim.
--
-- Before, the claim updated every queue row (sender, token, claim time) and the final
-- write-back deleted it: two writes and a dead row version per message in the queue. Now the
-- claim's delete is the only one, and a final outcome writes only the recipient and its event.
-- In `loadtest/statement_bench.py` a prototype of the two statements took 26.4 instead of
-- 32.6 µs of Postgres CPU per row, the first complete version 30.2 instead of 32.1 (medians of
-- 6 alternated runs); the load test measured 0.89 × the Postgres CPU per delivered message.
--
-- `recipients.version` is raised by every write of an attempt's outcome (and by recovery).
-- A write-back applies only while the version is still the one the claim read, under the
-- shard's current lease token: a write-back retried after its commit was lost, or one of a
-- sender whose lease moved on, writes nothing. A batch entry whose recipient still has the
-- claimed version is in flight; under a token that is no longer the shard's, it is an orphan,
-- which the shard's new holder recovers (retried, with an `outcome-unknown` event).
--
-- A recipient waiting to be sent has a queue row; one in flight has none and is not final.
-- The sender deletes a batch once all its outcomes are written; recovery deletes a batch with
-- nothing in flight.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM workers WHERE heartbeat_at > now() - interval '2 minutes') THEN
        RAISE EXCEPTION 'migration 9 (claim batches) needs every sender stopped first: '
                        'a sender heartbeat is less than 2 minutes old in table workers';
    END IF;
END $$;

ALTER TABLE recipients ADD COLUMN version integer NOT NULL DEFAULT 0;

CREATE TABLE claim_batches (
    id          bigserial   PRIMARY KEY,
    owner       uuid        NOT NULL,
    mailing_id  bigint      NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    -- The claiming sender's lease token of every shard (element shard + 1), NULL where it held
    -- none.
    tokens      bigint[]    NOT NULL,
    -- Parallel: each recipient claimed, its shard, and its version at the claim.
    ids         bigint[]    NOT NULL,
    shards      smallint[]  NOT NULL,
    versions    integer[]   NOT NULL
);

-- Rows left in flight by senders that stopped without handing them back become batches of
-- their sender, one per mailing, shard and token, which the shard's next holder recovers.
INSERT INTO claim_batches (owner, mailing_id, claimed_at, tokens, ids, shards, versions)
SELECT q.lease_owner, q.mailing_id, min(q.claimed_at),
       (SELECT array_agg(CASE WHEN s = q.shard THEN q.lease_token END ORDER BY s)
        FROM generate_series(0, 255) AS s),
       array_agg(q.recipient_id), array_agg(q.shard), array_agg(0)
FROM queue q
WHERE q.lease_owner IS NOT NULL
GROUP BY q.lease_owner, q.mailing_id, q.shard, q.lease_token;
DELETE FROM queue WHERE lease_owner IS NOT NULL;

ALTER TABLE queue DROP COLUMN lease_owner, DROP COLUMN lease_token, DROP COLUMN claimed_at;
-- Queue rows are no longer updated in place (the fill factor left room for the claim's update
-- to stay on the page): new pages are filled.
ALTER TABLE queue SET (fillfactor = 100);
