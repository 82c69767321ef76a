-- The per-state counters of a mailing are kept by the statements that change a recipient's
-- state, instead of by a statement-level trigger on UPDATE; they count rows in flight as
-- `sending` again; and a claim writes no index entry.
--
-- The trigger saw the updated rows through transition tables: for every write-back of a batch
-- of outcomes Postgres copied each updated recipient row, merge variables and all, twice (old
-- and new), then aggregated both copies. The statements know the states involved without that:
-- a recipient in the queue is `deferred` exactly when its queue row is a retry, and the bounce
-- statement locks the rows it changes and reads their state under the lock.
--
-- The INSERT trigger stays: ingest is one statement whose rows are all new.
-- Senders of an earlier version would keep claiming and writing back with the old statements,
-- which leave the counters to the trigger dropped here: they must all be stopped first.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM workers WHERE heartbeat_at > now() - interval '2 minutes') THEN
        RAISE EXCEPTION 'migration 5 (counters kept by statements) needs every sender stopped first: '
                        'a sender heartbeat is less than 2 minutes old in table workers';
    END IF;
END $$;

DROP TRIGGER recipients_counts_update ON recipients;
DROP FUNCTION recipients_counts_after_update();

-- Counter rows come in parts, summed when read: claims (part 1) and write-backs (part 2) both
-- move `sending`, and each holds its counter rows until it commits; with parts of their own a
-- claim never waits for a write-back. Part 0 is everything else (ingest, cancel, bounces).
ALTER TABLE mailing_counts ADD COLUMN part smallint NOT NULL DEFAULT 0;
ALTER TABLE mailing_counts DROP CONSTRAINT mailing_counts_pkey;
ALTER TABLE mailing_counts ADD PRIMARY KEY (mailing_id, state, part);

CREATE OR REPLACE FUNCTION recipients_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT mailing_id, state, 0, count(*) FROM new_rows
    GROUP BY mailing_id, state ORDER BY mailing_id, state
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION recipients_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_counts (mailing_id, state, part, n)
    SELECT mailing_id, state, 0, -count(*) FROM old_rows
    GROUP BY mailing_id, state ORDER BY mailing_id, state
    ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

-- The counter changes, in counter part `counter_part`, for recipients of mailing_ids[i] moving from
-- old_states[i] to new_states[i]: one row per (mailing, state) that changes, in key order.
-- Every statement takes its counter rows in this order, so two never wait on each other
-- crosswise.
CREATE FUNCTION mailing_count_changes(mailing_ids bigint[], old_states text[], new_states text[], counter_part smallint)
RETURNS TABLE (mailing_id bigint, state text, part smallint, delta bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT c.mailing_id, c.state, counter_part, sum(c.delta)::bigint
    FROM (SELECT o.mailing_id, o.state, -1 AS delta FROM unnest(mailing_ids, old_states) AS o(mailing_id, state)
          UNION ALL
          SELECT n.mailing_id, n.state, 1 FROM unnest(mailing_ids, new_states) AS n(mailing_id, state)) AS c
    GROUP BY c.mailing_id, c.state
    HAVING sum(c.delta) <> 0
    ORDER BY c.mailing_id, c.state
$$;

-- A claim no longer adds index entries: the queue keeps one plain index of due times, and no
-- index mentions the lease columns, so the claim's update of a row (owner, token, claim time)
-- is a heap-only (HOT) update when the page has room. Before, `queue_due` was partial on
-- `lease_owner IS NULL` and `queue_in_flight` partial on `lease_owner IS NOT NULL`, so every
-- claim added entries to the primary key and to `queue_in_flight`, which vacuum then removed.
-- The claim now steps over the rows in flight at the front of the due order (a heap check
-- each, a few thousand per sender at most), and finding a dead sender's rows reads the queue
-- sequentially, once per shard takeover.
--
-- Without deduplication: ingest queues a chunk with one due time, and posting lists of many
-- equal keys kept the entries of claimed rows alive until every row in the list was gone.
DROP INDEX queue_in_flight;
DROP INDEX queue_due;
CREATE INDEX queue_due ON queue (mailing_id, next_attempt_at) WITH (deduplicate_items = off);
-- Room on each page for the new version of every row on it: a claim updates a page's rows
-- together, before the old versions can be pruned.
ALTER TABLE queue SET (fillfactor = 50);

-- Rows in flight are counted as `sending` by the claim and the write-back (before, counting
-- them meant reading the queue on every GetMailing). The rows in flight now move there.
INSERT INTO mailing_counts (mailing_id, state, part, n)
SELECT c.*
FROM (SELECT array_agg(mailing_id) AS ids,
             array_agg(CASE WHEN retry THEN 'deferred' ELSE 'queued' END) AS olds,
             array_agg('sending'::text) AS news
      FROM queue WHERE lease_owner IS NOT NULL) AS a,
     mailing_count_changes(a.ids, a.olds, a.news, 0::smallint) AS c
ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n;
