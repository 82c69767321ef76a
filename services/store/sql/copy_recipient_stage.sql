COPY recipient_stage (position, email, domain, shard, external_id, variables) FROM STDIN BINARY
