-- The per-state counters of a mailing are kept by the statements that change a recipient's
-- state, instead of by a statement-level trigger on UPDATE.
--
-- The trigger saw the updated rows through transition tables: for every write-back of a batch
-- of outcomes Postgres copied each updated recipient row, merge variables and all, twice (old
-- and new), then aggregated both copies. The statements know the states involved without that:
-- a recipient in the queue is `deferred` exactly when its queue row is a retry, and the bounce
-- statement locks the rows it changes and reads their state under the lock.
--
-- The INSERT trigger stays: ingest is one statement whose rows are all new.
DROP TRIGGER recipients_counts_update ON recipients;
DROP FUNCTION recipients_counts_after_update();

-- The counter changes for recipients of mailing_ids[i] moving from old_states[i] to
-- new_states[i], one row per (mailing, state) that changes, in key order: every statement
-- takes the counter rows in this order, so two of them never wait on each other crosswise.
CREATE FUNCTION mailing_count_changes(mailing_ids bigint[], old_states text[], new_states text[])
RETURNS TABLE (mailing_id bigint, state text, delta bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT c.mailing_id, c.state, sum(c.delta)::bigint
    FROM (SELECT o.mailing_id, o.state, -1 AS delta FROM unnest(mailing_ids, old_states) AS o(mailing_id, state)
          UNION ALL
          SELECT n.mailing_id, n.state, 1 FROM unnest(mailing_ids, new_states) AS n(mailing_id, state)) AS c
    GROUP BY c.mailing_id, c.state
    HAVING sum(c.delta) <> 0
    ORDER BY c.mailing_id, c.state
$$;

-- The queue's indexes hold one entry per row version of a row that changes twice within
-- seconds; with deduplication, posting lists of many equal keys (a chunk of recipients is
-- queued with one next_attempt_at) kept entries of claimed rows alive until every row in the
-- list was gone, so each claim stepped over the dead versions of earlier claims.
ALTER INDEX queue_due SET (deduplicate_items = off);
ALTER INDEX queue_in_flight SET (deduplicate_items = off);
