CREATE TEMP TABLE IF NOT EXISTS recipient_stage (
    position    integer  NOT NULL,
    email       text     NOT NULL,
    domain      text     NOT NULL,
    shard       smallint NOT NULL,
    external_id text     NOT NULL,
    variables   jsonb    NOT NULL
) ON COMMIT DELETE ROWS
