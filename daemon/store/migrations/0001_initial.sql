-- 0001: runs, offers, orders and per-(account, resource) sync state.
-- {schema} is replaced by the quoted schema name when the file is loaded.

CREATE TABLE {schema}.sync_runs (
    id               bigserial PRIMARY KEY,
    account          text        NOT NULL,
    resource         text        NOT NULL CHECK (resource IN ('offers', 'orders')),
    mode             text        NOT NULL CHECK (mode IN ('full', 'incremental')),
    trigger          text        NOT NULL,
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'completed', 'failed', 'timeout', 'cancelled')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    pages_done       integer     NOT NULL DEFAULT 0,
    pages_total      integer,
    items_seen       bigint      NOT NULL DEFAULT 0,
    items_written    bigint      NOT NULL DEFAULT 0,
    items_unchanged  bigint      NOT NULL DEFAULT 0,
    items_invalid    bigint      NOT NULL DEFAULT 0,
    api_requests     integer     NOT NULL DEFAULT 0,
    api_retries      integer     NOT NULL DEFAULT 0,
    api_throttled    integer     NOT NULL DEFAULT 0,
    error            text,
    host             text        NOT NULL,
    pid              integer     NOT NULL,
    lock_key         bigint      NOT NULL,
    CONSTRAINT sync_runs_finished_iff_terminal CHECK ((status = 'running') = (finished_at IS NULL))
);

-- history and status: newest runs of one pair
CREATE INDEX sync_runs_pair_started ON {schema}.sync_runs (account, resource, started_at DESC);
-- history of all pairs, and retention trimming
CREATE INDEX sync_runs_started ON {schema}.sync_runs (started_at);
-- the monitor: running runs only (a small partial index)
CREATE INDEX sync_runs_running ON {schema}.sync_runs (heartbeat_at) WHERE status = 'running';
-- last success per pair
CREATE INDEX sync_runs_last_success ON {schema}.sync_runs (account, resource, finished_at DESC)
    WHERE status = 'completed';

CREATE TABLE {schema}.offers (
    account            text        NOT NULL,
    id                 bigint      NOT NULL,
    part_number        text,
    part_number_key    text,
    name               text,
    brand              text,
    category_id        bigint,
    status             smallint,
    sale_price         numeric(16, 4),
    recommended_price  numeric(16, 4),
    min_sale_price     numeric(16, 4),
    max_sale_price     numeric(16, 4),
    currency           text,
    vat_id             integer,
    general_stock      integer,
    estimated_stock    integer,
    raw                jsonb       NOT NULL,
    content_hash       bytea       NOT NULL,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at       timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    missing_since      timestamptz,
    PRIMARY KEY (account, id)
) WITH (fillfactor = 90);

CREATE INDEX offers_part_number ON {schema}.offers (account, part_number);
CREATE INDEX offers_part_number_key ON {schema}.offers (part_number_key) WHERE part_number_key <> '';
CREATE INDEX offers_missing ON {schema}.offers (account) WHERE missing_since IS NOT NULL;

CREATE TABLE {schema}.orders (
    account          text        NOT NULL,
    id               bigint      NOT NULL,
    status           smallint,
    type             smallint,
    is_complete      boolean,
    payment_mode_id  integer,
    date             timestamptz,
    modified         timestamptz,
    raw              jsonb       NOT NULL,
    content_hash     bytea       NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, id)
);

CREATE INDEX orders_modified ON {schema}.orders (account, modified DESC);
CREATE INDEX orders_status_date ON {schema}.orders (account, status, date DESC);

CREATE TABLE {schema}.sync_state (
    account     text        NOT NULL,
    resource    text        NOT NULL CHECK (resource IN ('offers', 'orders')),
    watermark   timestamptz,
    checkpoint  jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, resource)
);
