-- A suppression is applied when it is added, not looked up again at every claim.
--
-- Before, the claim probed the suppression list for every row it took: 1.6 µs of Postgres CPU
-- per message with an empty list and 2.5 µs with a list of 200,000 addresses
-- (`loadtest/statement_bench.py`), growing with the list, for a check that almost never finds
-- anything. Now whoever adds a suppression (the API, a bounce or complaint report, a permanent
-- rejection at SMTP time, the soft-bounce limit) ends, in the same transaction, every recipient
-- of that address still waiting in the queue of one of the tenant's open mailings
-- (`apply_suppressions.sql`): the queue row is deleted, the recipient ends `suppressed` with an
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
-- suppressions an exclusive one (`lock_tenant_suppressions`) from before it applies them. So the
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
-- never wait on each other crosswise.
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
