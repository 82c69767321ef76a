-- A suppression is applied when it is added, not looked up again at every claim.
--
-- Before, the claim probed the suppression list for every row it took, for a check that almost
-- never finds anything. In `loadtest/statement_bench.py` (medians of 5 alternated runs) the
-- claim took 11.58 instead of 12.46 µs of Postgres CPU per row with an empty list, and 12.06
-- instead of 15.15 with 200,000 suppressed addresses: the probe grows with the list. Now whoever adds a suppression (the API, a bounce or complaint report, a permanent
-- rejection at SMTP time, the soft-bounce limit) ends, in the same transaction, every recipient
-- of that address still waiting in the queue of one of the tenant's open mailings
-- (`apply_suppressions()`): the queue row is deleted, the recipient ends `suppressed` with an
-- event. Recipients added later are checked by the ingest, as before.
--
-- Two kinds of waiting rows are still checked at the claim, flagged `recheck`:
-- - rows put back into the queue after a claim (a retry, a row handed back unsent, a row
--   recovered from a dead sender): a suppression added while the row was in flight did not
--   find it waiting;
-- - every row queued before this migration, whose address may have been suppressed after it
--   was queued. The column's default is true, so they all are; the ingest sets false.
--
-- An ingest and the addition of a suppression must not miss each other: the ingest's snapshot
-- may not see a suppression committed after it began, and the suppression's may not see rows the
-- ingest has not committed yet. The ingest of a chunk holds a shared transaction lock on the
-- tenant's suppressions (`share_tenant_suppressions`) from before its insert, whoever adds
-- suppressions an exclusive one (`lock_tenant_suppressions`) from before it applies them
-- (`apply_suppressions`). So the
-- application sees every chunk committed before it, and every chunk after it sees the
-- suppression.
ALTER TABLE queue ADD COLUMN recheck boolean NOT NULL DEFAULT true;

-- The open mailings of a tenant, where a new suppression looks for waiting recipients: a few,
-- among all the tenant's mailings.
CREATE INDEX mailings_open_by_tenant ON mailings (tenant_id, id) WHERE state NOT IN ('completed', 'cancelled');

-- Lock keys: the two-key advisory lock space, class 1937076336 ("supp" in ASCII), with the hash
-- of the tenant. Two tenants that share a hash share a lock, which is only slower.
CREATE FUNCTION share_tenant_suppressions(tenant_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock_shared(1937076336, hashtext(tenant_id))
$$;

-- Exclusive, for every tenant of the array, in the order of the keys, so that two adders
-- never wait on each other crosswise. Taken by apply_suppressions() below.
CREATE FUNCTION lock_tenant_suppressions(tenant_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key integer;
BEGIN
    FOR key IN SELECT DISTINCT hashtext(t) FROM unnest(tenant_ids) AS t ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1937076336, key);
    END LOOP;
END
$$;

-- Ends every recipient still waiting in the queue of an open mailing whose address is now on
-- its tenant's suppression list: the addresses `emails` of tenants `tenant_ids` (pairs), just
-- suppressed by the calling transaction. Each ends `suppressed` with the suppression's reason
-- and an event. Returns how many ended so.
--
-- First it takes the tenants' exclusive suppression locks, held to the commit. A function, so
-- that a report, a write-back or an API call pays one statement for all of it: each query in
-- it takes its snapshot after the lock (READ COMMITTED), where a single statement would have
-- taken its own before. Mostly there is nothing waiting (a bounce of an address in no open
-- mailing), which a plain lookup tells before the statement that writes.
--
-- The queue row decides: whoever deletes it (this, a claim, a cancel) owns the recipient. A
-- recipient in flight has none and is left to its sender; should it come back into the queue,
-- its row is flagged for the claim to check again.
CREATE FUNCTION apply_suppressions(tenant_ids text[], emails text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ended bigint;
BEGIN
    PERFORM lock_tenant_suppressions(tenant_ids);
    IF NOT EXISTS (
        SELECT 1
        FROM unnest(tenant_ids, emails) AS a(tenant_id, email)
        JOIN mailings m ON m.tenant_id = a.tenant_id AND m.state NOT IN ('completed', 'cancelled')
        JOIN recipients r ON r.mailing_id = m.id AND lower(r.email) = lower(a.email)
        WHERE r.state IN ('queued', 'deferred')
    ) THEN
        RETURN 0;
    END IF;
    WITH added AS (
        SELECT DISTINCT s.tenant_id, s.email, s.reason
        FROM unnest(tenant_ids, emails) AS a(tenant_id, email)
        JOIN suppressions s ON s.tenant_id = a.tenant_id AND s.email = lower(a.email)
    ), waiting AS (
        -- Locked in due order, the order in which a claim takes them, so that the two do not wait
        -- on each other crosswise; a row a claim took meanwhile is skipped.
        SELECT q.recipient_id, q.mailing_id, a.reason
        FROM added a
        JOIN mailings m ON m.tenant_id = a.tenant_id AND m.state NOT IN ('completed', 'cancelled')
        JOIN recipients r ON r.mailing_id = m.id AND lower(r.email) = a.email
        JOIN queue q ON q.recipient_id = r.id
        WHERE r.state IN ('queued', 'deferred')
        ORDER BY q.mailing_id, q.next_attempt_at, q.recipient_id
        FOR UPDATE OF q
    ), dequeued AS (
        DELETE FROM queue q
        USING waiting w
        WHERE q.recipient_id = w.recipient_id
        RETURNING q.recipient_id, q.mailing_id, q.retry, w.reason
    ), updated AS (
        UPDATE recipients r
        SET state = 'suppressed',
            reason = 'suppressed: ' || d.reason,
            version = r.version + 1,
            updated_at = now()
        FROM dequeued d
        WHERE r.mailing_id = d.mailing_id AND r.id = d.recipient_id
        RETURNING r.id, r.tenant_id, r.mailing_id, r.attempts, r.state, r.reason,
                  CASE WHEN d.retry THEN 'deferred' ELSE 'queued' END AS old_state
    ), counted AS (
        INSERT INTO mailing_counts (mailing_id, state, part, n)
        SELECT c.*
        FROM (SELECT array_agg(mailing_id) AS ids, array_agg(old_state) AS olds, array_agg(state) AS news
              FROM updated) AS a,
             mailing_count_changes(a.ids, a.olds, a.news, 0::smallint) AS c
        ON CONFLICT (mailing_id, state, part) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n
    ), events AS (
        INSERT INTO delivery_events (tenant_id, mailing_id, recipient_id, kind, attempt, detail)
        SELECT tenant_id, mailing_id, id, 'suppressed', attempts, reason FROM updated
    )
    SELECT count(*) INTO ended FROM updated;
    RETURN ended;
END
$$;
