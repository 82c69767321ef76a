-- Inbound reports (bounces, complaints, auto-replies): every one stored raw before it is
-- processed, never dropped. Unmatched or unparseable reports stay `quarantined` for inspection.
CREATE TABLE inbound_reports (
    id            bigserial   PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    source        text        NOT NULL CHECK (source IN ('smtp', 'ingest', 'api')),
    envelope_from text,
    envelope_to   text,
    raw           bytea       NOT NULL,
    raw_sha256    bytea       NOT NULL,
    status        text        NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'applied', 'ignored', 'quarantined')),
    kind          text,
    problem       text,
    num_records   int         NOT NULL DEFAULT 0,
    num_applied   int         NOT NULL DEFAULT 0,
    processed_at  timestamptz
);
-- The same report delivered twice (or ingested again) is stored once.
CREATE UNIQUE INDEX inbound_reports_by_hash ON inbound_reports (raw_sha256);
CREATE INDEX inbound_reports_quarantined ON inbound_reports (id) WHERE status = 'quarantined';

-- Soft bounces per address, to suppress an address after N within a window.
CREATE TABLE soft_bounces (
    tenant_id  text        NOT NULL,
    email      text        NOT NULL,
    bounced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX soft_bounces_by_address ON soft_bounces (tenant_id, email, bounced_at);
