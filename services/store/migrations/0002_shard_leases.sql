-- Sharded senders: every sender heartbeats into `workers` and holds leases on a fair share of the
-- 256 shards. A lease's token grows on every acquisition; rows claimed under a lease carry its
-- token, and every write a sender makes checks that the lease is still its own with that token
-- and unexpired, so a sender that stalled past its lease writes nothing when it wakes.

CREATE TABLE workers (
    id           uuid        PRIMARY KEY,
    hostname     text        NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_leases (
    shard      smallint    PRIMARY KEY CHECK (shard >= 0 AND shard < 256),
    owner      uuid,
    token      bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz
);
INSERT INTO shard_leases (shard) SELECT g FROM generate_series(0, 255) AS g;

ALTER TABLE recipients ADD COLUMN lease_token bigint;

-- Per-destination-domain settings, changeable at run time (AdminService): a rate limit other
-- than the default, and a pause switch.
CREATE TABLE domain_settings (
    domain         text        PRIMARY KEY,
    max_per_minute int         CHECK (max_per_minute IS NULL OR max_per_minute > 0),
    paused         boolean     NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Per-mailing pacing ("no more than N per hour", spread evenly across all senders): the next
-- free send slot is kept on the mailing row and advanced by every claim.
ALTER TABLE mailings
    ADD COLUMN max_per_hour int CHECK (max_per_hour IS NULL OR max_per_hour > 0),
    ADD COLUMN pace_next_slot timestamptz;
