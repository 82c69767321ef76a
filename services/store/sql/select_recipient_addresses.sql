-- The tenant and address of each recipient ($1 mailing ids, $2 recipient ids).
SELECT r.tenant_id, r.email
FROM unnest($1::bigint[], $2::bigint[]) AS k(mailing_id, id)
JOIN recipients r ON r.mailing_id = k.mailing_id AND r.id = k.id
