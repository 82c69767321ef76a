-- sendwerk schema, version 1. Forward-only: never edit a migration that has shipped; add a new one.

CREATE TABLE mailings (
    id               bigserial PRIMARY KEY,
    tenant_id        text        NOT NULL,
    name             text        NOT NULL,
    from_email       text        NOT NULL,
    from_name        text        NOT NULL DEFAULT '',
    reply_to_email   text        NOT NULL DEFAULT '',
    reply_to_name    text        NOT NULL DEFAULT '',
    subject_template text        NOT NULL,
    html_template    text        NOT NULL DEFAULT '',
    text_template    text        NOT NULL DEFAULT '',
    headers          jsonb       NOT NULL DEFAULT '[]',
    tags             text[]      NOT NULL DEFAULT '{}',
    state            text        NOT NULL DEFAULT 'draft'
        CHECK (state IN ('draft', 'scheduled', 'sending', 'paused', 'completed', 'cancelled')),
    send_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz
);
CREATE INDEX mailings_by_tenant ON mailings (tenant_id, id);
CREATE INDEX mailings_active ON mailings (state, send_at) WHERE state IN ('scheduled', 'sending');

CREATE TABLE attachments (
    mailing_id   bigint  NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    position     int     NOT NULL,
    filename     text    NOT NULL,
    content_type text    NOT NULL,
    content_id   text,
    content      bytea   NOT NULL,
    PRIMARY KEY (mailing_id, position)
);

-- One row per (mailing, address): the delivery queue and its history at once.
CREATE TABLE recipients (
    id               bigserial   PRIMARY KEY,
    mailing_id       bigint      NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    tenant_id        text        NOT NULL,
    email            text        NOT NULL,
    domain           text        NOT NULL,
    shard            smallint    NOT NULL,
    external_id      text        NOT NULL DEFAULT '',
    variables        jsonb       NOT NULL DEFAULT '{}',
    state            text        NOT NULL
        CHECK (state IN ('queued', 'sending', 'deferred', 'sent', 'failed', 'expired', 'bounced',
                         'complained', 'suppressed', 'skipped', 'cancelled')),
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    lease_owner      uuid,
    lease_expires_at timestamptz,
    last_code        int,
    last_enhanced    text,
    last_reply       text,
    reason           text,
    message_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Addresses are unique per mailing regardless of case.
CREATE UNIQUE INDEX recipients_unique_address ON recipients (mailing_id, lower(email));
-- Paging and export in insertion order.
CREATE INDEX recipients_by_mailing ON recipients (mailing_id, id);
-- The queue: partial, so it holds only rows still waiting and shrinks as a campaign drains.
-- The claim must use exactly this index (asserted in a test).
CREATE INDEX recipients_queue ON recipients (mailing_id, next_attempt_at)
    WHERE state IN ('queued', 'deferred');
-- Rows under a sender's lease, for recovering the rows of a sender that died.
CREATE INDEX recipients_in_flight ON recipients (lease_expires_at) WHERE state = 'sending';

-- Append-only history; its id is the cursor of an event stream.
CREATE TABLE delivery_events (
    id           bigserial   PRIMARY KEY,
    tenant_id    text        NOT NULL,
    mailing_id   bigint      NOT NULL,
    recipient_id bigint      NOT NULL,
    kind         text        NOT NULL,
    attempt      int,
    smtp_code    int,
    enhanced     text,
    detail       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_events_by_recipient ON delivery_events (recipient_id, id);
CREATE INDEX delivery_events_by_mailing ON delivery_events (mailing_id, id);

-- Addresses never to send to, per tenant; `email` is lowercase.
CREATE TABLE suppressions (
    tenant_id  text        NOT NULL,
    email      text        NOT NULL,
    reason     text        NOT NULL
        CHECK (reason IN ('manual', 'unsubscribe', 'hard_bounce', 'complaint', 'soft_bounce')),
    note       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email)
);

-- Per-state recipient counts per mailing, kept by statement-level triggers so that reading a
-- mailing's progress is one small index scan at any campaign size. Batched statements touch these
-- rows once per statement, in (mailing_id, state) order to avoid lock-order deadlocks.
CREATE TABLE mailing_counts (
    mailing_id bigint NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    state      text   NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (mailing_id, state)
);

CREATE FUNCTION recipients_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_counts (mailing_id, state, n)
    SELECT mailing_id, state, count(*) FROM new_rows
    GROUP BY mailing_id, state ORDER BY mailing_id, state
    ON CONFLICT (mailing_id, state) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION recipients_counts_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_counts (mailing_id, state, n)
    SELECT mailing_id, state, sum(delta) FROM (
        SELECT mailing_id, state, -1 AS delta FROM old_rows
        UNION ALL
        SELECT mailing_id, state, 1 AS delta FROM new_rows
    ) AS changes
    GROUP BY mailing_id, state HAVING sum(delta) <> 0 ORDER BY mailing_id, state
    ON CONFLICT (mailing_id, state) DO UPDATE SET n = mailing_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION recipients_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailing_counts c SET n = c.n - d.n
    FROM (SELECT mailing_id, state, count(*) AS n FROM old_rows GROUP BY mailing_id, state
          ORDER BY mailing_id, state) AS d
    WHERE c.mailing_id = d.mailing_id AND c.state = d.state;
    RETURN NULL;
END $$;

CREATE TRIGGER recipients_counts_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_counts_after_insert();
CREATE TRIGGER recipients_counts_update AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_counts_after_update();
CREATE TRIGGER recipients_counts_delete AFTER DELETE ON recipients
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_counts_after_delete();
