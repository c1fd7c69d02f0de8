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
-- Insert a run row, committed before the first API request; register the pair; take over
-- the login's rate budget ($8 login, $9 route group; none when NULL) as it stands: the
-- seconds until its next request may leave, its slowdown, whether its last holder died.
WITH budget AS (
    SELECT greatest(0, extract(epoch FROM b.next_at - clock_timestamp()))::float8 AS wait_s,
           b.slowdown, b.holder IS NOT NULL AS orphaned
      FROM {schema}.rate_budgets b WHERE b.login = $8 AND b.route_group = $9
), run AS (
    INSERT INTO {schema}.sync_runs (account, resource, mode, trigger, host, pid, lock_key)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id, started_at
), pair AS (
    INSERT INTO {schema}.sync_state (account, resource) VALUES ($1, $2)
    ON CONFLICT (account, resource) DO NOTHING
), held AS (
    INSERT INTO {schema}.rate_budgets (login, route_group, holder)
    SELECT $8, $9, id FROM run WHERE $8::text IS NOT NULL
    ON CONFLICT (login, route_group) DO UPDATE SET holder = EXCLUDED.holder, updated_at = now()
), served AS (
    -- every "sync now" made before this run is served by it
    UPDATE {schema}.sync_requests SET run_id = (SELECT id FROM run), served_at = clock_timestamp()
     WHERE account = $1 AND resource = $2 AND served_at IS NULL
    RETURNING 1
)
SELECT run.id, run.started_at, coalesce(budget.wait_s, 0) AS budget_wait_s,
       coalesce(budget.slowdown, 1) AS budget_slowdown, coalesce(budget.orphaned, false) AS budget_orphaned
  FROM run LEFT JOIN budget ON true;

-- name: save_progress
-- Heartbeat and counters of a live run; $2 is a Progress as JSON, its keys the column
-- names. With a status ($3, and its error $4) it closes the run, once: a closed run is
-- never reopened nor overwritten (the monitor's close stands). Returns the new status.
-- The run's rate budget goes with it ($5 s until its next request, $6 slowdown), and a
-- close hands the budget back.
WITH budget AS (
    UPDATE {schema}.rate_budgets
       SET next_at = coalesce(clock_timestamp() + make_interval(secs => $5::float8), next_at),
           slowdown = coalesce($6::float8, slowdown),
           holder = CASE WHEN $3::text IS NULL THEN holder END, updated_at = now()
     WHERE holder = $1
)
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

-- name: scan_begin
-- A full offer scan starts: the session's table of the ids it sees, emptied. A temporary
-- table: no WAL, no shared buffers, and no row of `offers` is touched to remember a sighting.
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS emag_sync_scan_seen (id bigint NOT NULL);
TRUNCATE pg_temp.emag_sync_scan_seen;

-- name: upsert_offers
-- One page of offers in one statement: new rows inserted, changed or returning rows
-- rewritten (change_seq taken by the trigger or the default), unchanged rows not touched
-- at all (no new row version, no row lock); the ids seen go to the scan table (the change
-- feed is notified by the tables' triggers). Returns inserted and updated.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::smallint[], $9::numeric[], $10::numeric[],
                         $11::numeric[], $12::numeric[], $13::text[], $14::integer[],
                         $15::integer[], $16::integer[], $17::text[], $18::bytea[])
        AS t(id, part_number, part_number_key, name, brand, category_id, status, sale_price,
             recommended_price, min_sale_price, max_sale_price, currency, vat_id,
             general_stock, estimated_stock, raw, content_hash)
), inserted AS (
    INSERT INTO {schema}.offers (account, id, part_number, part_number_key, name, brand,
           category_id, status, sale_price, recommended_price, min_sale_price, max_sale_price,
           currency, vat_id, general_stock, estimated_stock, raw, content_hash)
    SELECT $1, i.id, i.part_number, i.part_number_key, i.name, i.brand, i.category_id, i.status,
           i.sale_price, i.recommended_price, i.min_sale_price, i.max_sale_price, i.currency, i.vat_id,
           i.general_stock, i.estimated_stock, i.raw::jsonb, i.content_hash
      FROM input i
     WHERE NOT EXISTS (SELECT 1 FROM {schema}.offers o WHERE o.account = $1 AND o.id = i.id)
    ON CONFLICT (account, id) DO NOTHING
    RETURNING 1
), updated AS (
    UPDATE {schema}.offers o
       SET part_number = i.part_number, part_number_key = i.part_number_key, name = i.name,
           brand = i.brand, category_id = i.category_id, status = i.status, sale_price = i.sale_price,
           recommended_price = i.recommended_price, min_sale_price = i.min_sale_price,
           max_sale_price = i.max_sale_price, currency = i.currency, vat_id = i.vat_id,
           general_stock = i.general_stock, estimated_stock = i.estimated_stock, raw = i.raw::jsonb,
           content_hash = i.content_hash, updated_at = now(), last_seen_at = now(), missing_since = NULL
      FROM input i
     WHERE o.account = $1 AND o.id = i.id
       AND (o.content_hash IS DISTINCT FROM i.content_hash OR o.missing_since IS NOT NULL)
    RETURNING 1
), seen AS (
    INSERT INTO pg_temp.emag_sync_scan_seen (id) SELECT id FROM input
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM updated) AS updated;

-- name: mark_missing_offers
-- After a full scan that this session read from its first page: offers it did not see are
-- marked missing (a change), never deleted. Returns how many.
WITH marked AS (
    UPDATE {schema}.offers o SET missing_since = now()
     WHERE o.account = $1 AND o.missing_since IS NULL
       AND NOT EXISTS (SELECT 1 FROM pg_temp.emag_sync_scan_seen s WHERE s.id = o.id)
    RETURNING 1
)
SELECT count(*) AS marked FROM marked;

-- name: upsert_orders
-- One page of orders in one statement: new inserted, changed rewritten, unchanged not
-- touched. Returns inserted and updated.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::smallint[], $4::smallint[], $5::boolean[],
                         $6::integer[], $7::timestamptz[], $8::timestamptz[], $9::text[],
                         $10::bytea[])
        AS t(id, status, type, is_complete, payment_mode_id, date, modified, raw, content_hash)
), inserted AS (
    INSERT INTO {schema}.orders (account, id, status, type, is_complete, payment_mode_id, date,
           modified, raw, content_hash)
    SELECT $1, i.id, i.status, i.type, i.is_complete, i.payment_mode_id, i.date, i.modified,
           i.raw::jsonb, i.content_hash
      FROM input i
     WHERE NOT EXISTS (SELECT 1 FROM {schema}.orders o WHERE o.account = $1 AND o.id = i.id)
    ON CONFLICT (account, id) DO NOTHING
    RETURNING 1
), updated AS (
    UPDATE {schema}.orders o
       SET status = i.status, type = i.type, is_complete = i.is_complete,
           payment_mode_id = i.payment_mode_id, date = i.date, modified = i.modified,
           raw = i.raw::jsonb, content_hash = i.content_hash, updated_at = now()
      FROM input i
     WHERE o.account = $1 AND o.id = i.id AND o.content_hash IS DISTINCT FROM i.content_hash
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM updated) AS updated;

-- name: register_pairs
-- The (account, resource) pairs a daemon's configuration syncs, known before their first run
-- (so request_sync accepts them); $1 accounts and $2 resources, element by element.
INSERT INTO {schema}.sync_state (account, resource)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (account, resource) DO NOTHING;

-- name: request_sync
-- "Sync now" for one account ($1) and offers, orders or all ($2): the ids of the requests made.
SELECT request_sync AS id FROM {schema}.request_sync($1, $2);

-- name: pending_requests
-- Requests no run has served yet, per pair: how many, since when and how long ago (the
-- database's clock), for status, the scheduler and the monitor (the partial index of pending ones).
SELECT account, resource, count(*) AS pending, min(requested_at) AS since,
       extract(epoch FROM now() - min(requested_at))::float8 AS oldest_age_s
  FROM {schema}.sync_requests WHERE served_at IS NULL
 GROUP BY account, resource ORDER BY account, resource;

-- name: request_outcomes
-- For `trigger --wait`: each request ($1 ids), the run that served it and how that run stands.
SELECT q.id, q.account, q.resource, q.run_id, r.status, r.error
  FROM {schema}.sync_requests q LEFT JOIN {schema}.sync_runs r ON r.id = q.run_id
 WHERE q.id = ANY($1::bigint[]) ORDER BY q.id;

-- name: set_webhook_targets
-- The configuration's webhook URLs ($1) become the targets of every run that ends from now on.
WITH gone AS (
    DELETE FROM {schema}.webhook_targets WHERE url <> ALL($1::text[])
)
INSERT INTO {schema}.webhook_targets (url) SELECT DISTINCT unnest($1::text[])
ON CONFLICT (url) DO UPDATE SET updated_at = now();

-- name: claim_deliveries
-- Up to $1 deliveries that are due, each taken for $2 s (another daemon skips them; a
-- process that dies mid-delivery lets them come due again), attempt counted.
UPDATE {schema}.webhook_deliveries d
   SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
 WHERE d.id IN (SELECT id FROM {schema}.webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.run_id, d.url, d.payload, d.attempts;

-- name: delivery_attempted
-- One attempt's outcome: $2 delivered | pending (again in $5 s) | failed; $3 HTTP status, $4 error.
-- Only while the claim is still this attempt's ($6): a claim that ran out and was taken
-- again by another sender is that sender's to record.
UPDATE {schema}.webhook_deliveries
   SET status = $2, last_status = $3, last_error = $4,
       next_attempt_at = CASE WHEN $2 = 'pending' THEN now() + make_interval(secs => $5) ELSE next_attempt_at END,
       finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
 WHERE id = $1 AND attempts = $6;

-- name: recent_deliveries
-- The delivery log, newest first.
SELECT id, run_id, url, status, attempts, last_status, last_error, created_at, finished_at, next_attempt_at
  FROM {schema}.webhook_deliveries ORDER BY id DESC LIMIT $1;

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
-- Every running run with its ages and whether it still holds its lock (the one definition,
-- run_holds_lock); stale past $1 s of heartbeat, too old past $2 s of age. Status, the
-- monitor's pass and its metrics all read this.
SELECT r.id, r.account, r.resource, r.mode, r.trigger, r.started_at, r.heartbeat_at, r.host, r.pid,
       r.pages_done, r.pages_total, r.items_seen, r.api_requests, r.api_retries, r.api_throttled, r.api_wait_s,
       extract(epoch FROM now() - r.started_at)::float8 AS age_s,
       extract(epoch FROM now() - r.heartbeat_at)::float8 AS heartbeat_age_s,
       {schema}.run_holds_lock(r) AS lock_held,
       r.heartbeat_at < now() - make_interval(secs => $1) AS stale,
       r.started_at < now() - make_interval(secs => $2) AS too_old
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

-- name: schema_exists
-- $1: the quoted schema name.
SELECT to_regnamespace($1) IS NOT NULL;

-- name: create_schema
-- The schema itself, when it does not exist yet (CREATE SCHEMA IF NOT EXISTS would need
-- the CREATE right on the database even then, which the README's role does not have).
CREATE SCHEMA {schema};

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
