-- Deletes claim batches $2 of sender $1 once every outcome of them is written.
DELETE FROM claim_batches WHERE owner = $1 AND id = ANY ($2::bigint[])
