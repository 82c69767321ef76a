-- Counts a soft bounce for an address and suppresses it once it has $3 within $4 days.
WITH counted AS (
    INSERT INTO soft_bounces (tenant_id, email) VALUES ($1, lower($2))
    RETURNING tenant_id, email
), recent AS (
    SELECT count(*) + 1 AS n FROM soft_bounces
    WHERE tenant_id = $1 AND email = lower($2) AND bounced_at > now() - make_interval(days => $4)
)
INSERT INTO suppressions (tenant_id, email, reason, note)
SELECT $1, lower($2), 'soft_bounce', 'soft bounces: ' || n || ' within ' || $4 || ' days'
FROM recent WHERE n >= $3
ON CONFLICT (tenant_id, email) DO NOTHING
RETURNING email
