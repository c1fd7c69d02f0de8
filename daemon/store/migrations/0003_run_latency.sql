-- 0003: is eMAG slow, or are we? Per run: API request latency (p50, p95, max of every
-- attempt) and the time spent waiting on the login's rate limiter; the limiter wait is
-- also summed into the monotonic totals for emag_sync_api_wait_seconds_total.
-- Columns with defaults only: instant on PostgreSQL 11+, and the previous release
-- (which does not write them) keeps working against this schema.

ALTER TABLE {schema}.sync_runs
    ADD COLUMN api_wait_s         double precision NOT NULL DEFAULT 0,
    ADD COLUMN api_latency_p50_s  double precision,
    ADD COLUMN api_latency_p95_s  double precision,
    ADD COLUMN api_latency_max_s  double precision;

ALTER TABLE {schema}.sync_run_totals
    ADD COLUMN api_wait_s double precision NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION {schema}.count_closed_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.sync_run_totals AS t (account, resource, status, runs, items_seen,
           items_written, api_requests, api_retries, api_throttled, api_wait_s)
    VALUES (NEW.account, NEW.resource, NEW.status, 1, NEW.items_seen, NEW.items_written,
            NEW.api_requests, NEW.api_retries, NEW.api_throttled, NEW.api_wait_s)
    ON CONFLICT (account, resource, status) DO UPDATE
       SET runs = t.runs + 1, items_seen = t.items_seen + EXCLUDED.items_seen,
           items_written = t.items_written + EXCLUDED.items_written,
           api_requests = t.api_requests + EXCLUDED.api_requests,
           api_retries = t.api_retries + EXCLUDED.api_retries,
           api_throttled = t.api_throttled + EXCLUDED.api_throttled,
           api_wait_s = t.api_wait_s + EXCLUDED.api_wait_s;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.count_inserted_closed_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.sync_run_totals AS t (account, resource, status, runs, items_seen,
           items_written, api_requests, api_retries, api_throttled, api_wait_s)
    SELECT account, resource, status, count(*), sum(items_seen), sum(items_written),
           sum(api_requests), sum(api_retries), sum(api_throttled), sum(api_wait_s)
      FROM inserted WHERE status <> 'running'
     GROUP BY account, resource, status
    ON CONFLICT (account, resource, status) DO UPDATE
       SET runs = t.runs + EXCLUDED.runs, items_seen = t.items_seen + EXCLUDED.items_seen,
           items_written = t.items_written + EXCLUDED.items_written,
           api_requests = t.api_requests + EXCLUDED.api_requests,
           api_retries = t.api_retries + EXCLUDED.api_retries,
           api_throttled = t.api_throttled + EXCLUDED.api_throttled,
           api_wait_s = t.api_wait_s + EXCLUDED.api_wait_s;
    RETURN NULL;
END
$$;
