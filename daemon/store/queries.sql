-- Every query emag-sync runs, by name. "-- name: X" starts a query; the comment
-- line after it says what it is for. {schema} is replaced, quoted, at load.

-- name: schema_version
-- The highest applied migration (UndefinedTable when none ever ran).
SELECT max(version) FROM {schema}.schema_migrations;

-- name: try_lock
-- Single flight: the (account, resource) lock, held by the run's connection; and who that
-- session is (pid and start), so a close that cannot use it can drop exactly that session.
SELECT pg_try_advisory_lock($1) AS locked, pid, backend_start
  FROM pg_stat_activity WHERE pid = pg_backend_pid();

-- name: terminate_session
-- Drop a run's own session server-side, if it is still that session: its transaction and
-- row locks go with it even while it waits on a lock (a client disconnect would not).
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2;

-- name: unlock
-- Release the run's lock (the connection's death releases it too).
SELECT pg_advisory_unlock($1);

-- name: open_run
-- Insert a run row, committed before the first API request; register the pair.
WITH run AS (
    INSERT INTO {schema}.sync_runs (account, resource, mode, trigger, host, pid, lock_key)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id, started_at
), pair AS (
    INSERT INTO {schema}.sync_state (account, resource) VALUES ($1, $2)
    ON CONFLICT (account, resource) DO NOTHING
)
SELECT id, started_at FROM run;

-- name: save_progress
-- Heartbeat and counters of a live run; $2 is a Progress as JSON, its keys the column
-- names. With a status ($3, and its error $4) it closes the run, once: a closed run is
-- never reopened nor overwritten (the monitor's close stands). Returns the new status.
UPDATE {schema}.sync_runs r
   SET heartbeat_at = now(),
       status = coalesce($3, r.status),
       finished_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END,
       error = CASE WHEN $3::text IS NULL THEN r.error ELSE $4 END,
       pages_done = p.pages_done, pages_total = p.pages_total, items_seen = p.items_seen,
       items_written = p.items_written, items_unchanged = p.items_unchanged,
       items_invalid = p.items_invalid, api_requests = p.api_requests, api_retries = p.api_retries,
       api_throttled = p.api_throttled, api_wait_s = p.api_wait_s,
       api_latency_p50_s = p.api_latency_p50_s, api_latency_p95_s = p.api_latency_p95_s,
       api_latency_max_s = p.api_latency_max_s
  FROM jsonb_populate_record(NULL::{schema}.sync_runs, $2::jsonb) p
 WHERE r.id = $1 AND r.status = 'running'
RETURNING r.status;

-- name: get_state
-- Watermark and resume checkpoint of one pair.
SELECT watermark, checkpoint FROM {schema}.sync_state WHERE account = $1 AND resource = $2;

-- name: save_checkpoint
-- Where a run is, so a run that dies resumes after its last committed page.
INSERT INTO {schema}.sync_state (account, resource, checkpoint) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (account, resource) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, updated_at = now();

-- name: complete_state
-- A completed run: advance the watermark (when given) and drop the checkpoint.
INSERT INTO {schema}.sync_state (account, resource, watermark) VALUES ($1, $2, $3)
ON CONFLICT (account, resource) DO UPDATE
   SET watermark = coalesce(EXCLUDED.watermark, {schema}.sync_state.watermark),
       checkpoint = NULL, updated_at = now();

-- name: upsert_offers
-- One page of offers in one statement: insert new, rewrite changed, and for unchanged
-- rows only move last_seen_at (once per scan). Returns (inserted, updated).
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::smallint[], $9::numeric[], $10::numeric[],
                         $11::numeric[], $12::numeric[], $13::text[], $14::integer[],
                         $15::integer[], $16::integer[], $17::text[], $18::bytea[])
        AS t(id, part_number, part_number_key, name, brand, category_id, status, sale_price,
             recommended_price, min_sale_price, max_sale_price, currency, vat_id,
             general_stock, estimated_stock, raw, content_hash)
), written AS (
    INSERT INTO {schema}.offers AS o (account, id, part_number, part_number_key, name, brand,
           category_id, status, sale_price, recommended_price, min_sale_price, max_sale_price,
           currency, vat_id, general_stock, estimated_stock, raw, content_hash)
    SELECT $1, id, part_number, part_number_key, name, brand, category_id, status, sale_price,
           recommended_price, min_sale_price, max_sale_price, currency, vat_id, general_stock,
           estimated_stock, raw::jsonb, content_hash
      FROM input
    ON CONFLICT (account, id) DO UPDATE
       SET part_number = EXCLUDED.part_number, part_number_key = EXCLUDED.part_number_key,
           name = EXCLUDED.name, brand = EXCLUDED.brand, category_id = EXCLUDED.category_id,
           status = EXCLUDED.status, sale_price = EXCLUDED.sale_price,
           recommended_price = EXCLUDED.recommended_price,
           min_sale_price = EXCLUDED.min_sale_price, max_sale_price = EXCLUDED.max_sale_price,
           currency = EXCLUDED.currency, vat_id = EXCLUDED.vat_id,
           general_stock = EXCLUDED.general_stock, estimated_stock = EXCLUDED.estimated_stock,
           raw = EXCLUDED.raw, content_hash = EXCLUDED.content_hash,
           updated_at = now(), last_seen_at = now(), missing_since = NULL
     WHERE o.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING (xmax = 0) AS inserted
), seen AS (
    UPDATE {schema}.offers AS o SET last_seen_at = now(), missing_since = NULL
      FROM input
     WHERE o.account = $1 AND o.id = input.id AND o.content_hash = input.content_hash
       AND o.last_seen_at < $19
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
  FROM written;

-- name: mark_missing_offers
-- After a completed full scan: offers the scan did not see are marked, never deleted.
UPDATE {schema}.offers SET missing_since = now()
 WHERE account = $1 AND last_seen_at < $2 AND missing_since IS NULL;

-- name: upsert_orders
-- One page of orders in one statement; unchanged orders are not rewritten.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::smallint[], $4::smallint[], $5::boolean[],
                         $6::integer[], $7::timestamptz[], $8::timestamptz[], $9::text[],
                         $10::bytea[])
        AS t(id, status, type, is_complete, payment_mode_id, date, modified, raw, content_hash)
)
INSERT INTO {schema}.orders AS o (account, id, status, type, is_complete, payment_mode_id,
       date, modified, raw, content_hash)
SELECT $1, id, status, type, is_complete, payment_mode_id, date, modified, raw::jsonb, content_hash
  FROM input
ON CONFLICT (account, id) DO UPDATE
   SET status = EXCLUDED.status, type = EXCLUDED.type, is_complete = EXCLUDED.is_complete,
       payment_mode_id = EXCLUDED.payment_mode_id, date = EXCLUDED.date,
       modified = EXCLUDED.modified, raw = EXCLUDED.raw, content_hash = EXCLUDED.content_hash,
       updated_at = now()
 WHERE o.content_hash IS DISTINCT FROM EXCLUDED.content_hash
RETURNING (xmax = 0) AS inserted;

-- name: history
-- Newest runs first, optionally of one account and/or resource.
SELECT id, account, resource, mode, trigger, status, started_at, heartbeat_at, finished_at,
       pages_done, pages_total, items_seen, items_written, items_unchanged, items_invalid,
       api_requests, api_retries, api_throttled, api_wait_s, api_latency_p50_s, api_latency_p95_s,
       api_latency_max_s, error, host, pid
  FROM {schema}.sync_runs
 WHERE ($2::text IS NULL OR account = $2) AND ($3::text IS NULL OR resource = $3)
 ORDER BY started_at DESC, id DESC
 LIMIT $1;

-- name: running_runs
-- Runs in progress, with whether their lock is still held by a live session.
SELECT r.id, r.account, r.resource, r.mode, r.trigger, r.started_at, r.heartbeat_at,
       r.pages_done, r.pages_total, r.items_seen, r.host, r.pid,
       extract(epoch FROM now() - r.heartbeat_at)::float8 AS heartbeat_age_s,
       extract(epoch FROM now() - r.started_at)::float8 AS age_s,
       EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND ((l.classid::bigint << 32) | l.objid::bigint) = r.lock_key) AS lock_held
  FROM {schema}.sync_runs r
 WHERE r.status = 'running'
 ORDER BY r.started_at;

-- name: last_runs
-- Per known pair: its last completed run and its last run of any status.
SELECT s.account, s.resource, s.watermark, s.checkpoint,
       ok.finished_at AS last_success_at, ok.items_seen AS last_success_items,
       ok.finished_at - ok.started_at AS last_success_duration,
       last.status AS last_status, last.started_at AS last_started_at, last.error AS last_error
  FROM {schema}.sync_state s
  LEFT JOIN LATERAL (
        SELECT finished_at, started_at, items_seen FROM {schema}.sync_runs r
         WHERE r.account = s.account AND r.resource = s.resource AND r.status = 'completed'
         ORDER BY r.finished_at DESC LIMIT 1) ok ON true
  LEFT JOIN LATERAL (
        SELECT status, started_at, error FROM {schema}.sync_runs r
         WHERE r.account = s.account AND r.resource = s.resource
         ORDER BY r.started_at DESC LIMIT 1) last ON true
 ORDER BY s.account, s.resource;

-- name: migration_lock
-- Serialise concurrent `emag-sync migrate` runs (held until the transaction ends).
SELECT pg_advisory_xact_lock($1);

-- name: create_schema
-- The schema itself (first migrate only).
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_migrations_table
-- The record of applied migrations.
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
-- Versions already applied.
SELECT version FROM {schema}.schema_migrations ORDER BY version;

-- name: record_migration
-- Remember one applied migration.
INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2);
