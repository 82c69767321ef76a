-- The mailing's state, locked against a completion or a cancel for the rest of the ingest
-- chunk's transaction, together with the tenant's shared suppression lock (migration 10): a
-- suppression added meanwhile waits for the chunk, and then finds its rows. Taken here, before
-- the insert's statement takes its snapshot, so that the insert sees every suppression
-- committed before a concurrent addition could miss the chunk.
SELECT state, send_at, share_tenant_suppressions(tenant_id) FROM mailings WHERE tenant_id = $1 AND id = $2 FOR SHARE
