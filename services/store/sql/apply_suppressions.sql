-- Ends the recipients waiting in the tenants' open mailings for the addresses just suppressed
-- ($1 tenants, $2 addresses, in pairs), under the tenants' exclusive suppression locks: see
-- apply_suppressions() in migration 10. Returns how many ended `suppressed`.
SELECT apply_suppressions($1::text[], $2::text[])
