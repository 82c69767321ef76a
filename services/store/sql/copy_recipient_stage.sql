COPY recipient_stage (email, domain, shard, external_id, variables) FROM STDIN BINARY
