-- 0002: monotonic per-(account, resource, status) run totals for the monitor's counters.
--
-- Why a table and not count(*) at scrape time: `emag_sync_runs_total` and the API
-- counters are Prometheus counters, so they must never go down. Counting the rows
-- of sync_runs would drop every time retention trims old history, and Prometheus
-- reads a drop as a counter reset (rate() spikes). It would also scan the history on
-- every scrape. Triggers add each run to its pair's totals once, when the run is
-- closed (running -> terminal) or inserted already closed; deleting history never
-- subtracts. The row trigger's WHEN clause keeps heartbeat updates free. The table
-- holds one row per (account, resource, status): at most a few dozen rows.

CREATE TABLE {schema}.sync_run_totals (
    account        text   NOT NULL,
    resource       text   NOT NULL,
    status         text   NOT NULL,
    runs           bigint NOT NULL DEFAULT 0,
    items_seen     bigint NOT NULL DEFAULT 0,
    items_written  bigint NOT NULL DEFAULT 0,
    api_requests   bigint NOT NULL DEFAULT 0,
    api_retries    bigint NOT NULL DEFAULT 0,
    api_throttled  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account, resource, status)
);

CREATE FUNCTION {schema}.count_closed_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.sync_run_totals AS t (account, resource, status, runs, items_seen,
           items_written, api_requests, api_retries, api_throttled)
    VALUES (NEW.account, NEW.resource, NEW.status, 1, NEW.items_seen, NEW.items_written,
            NEW.api_requests, NEW.api_retries, NEW.api_throttled)
    ON CONFLICT (account, resource, status) DO UPDATE
       SET runs = t.runs + 1, items_seen = t.items_seen + EXCLUDED.items_seen,
           items_written = t.items_written + EXCLUDED.items_written,
           api_requests = t.api_requests + EXCLUDED.api_requests,
           api_retries = t.api_retries + EXCLUDED.api_retries,
           api_throttled = t.api_throttled + EXCLUDED.api_throttled;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_runs_count_closed AFTER UPDATE OF status ON {schema}.sync_runs
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION {schema}.count_closed_run();

-- Rows inserted already closed (imports, tests, benchmarks): one aggregate per statement,
-- so a bulk INSERT costs one upsert per pair, not one per row. The daemon's open_run
-- inserts 'running' rows, which this skips.
CREATE FUNCTION {schema}.count_inserted_closed_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.sync_run_totals AS t (account, resource, status, runs, items_seen,
           items_written, api_requests, api_retries, api_throttled)
    SELECT account, resource, status, count(*), sum(items_seen), sum(items_written),
           sum(api_requests), sum(api_retries), sum(api_throttled)
      FROM inserted WHERE status <> 'running'
     GROUP BY account, resource, status
    ON CONFLICT (account, resource, status) DO UPDATE
       SET runs = t.runs + EXCLUDED.runs, items_seen = t.items_seen + EXCLUDED.items_seen,
           items_written = t.items_written + EXCLUDED.items_written,
           api_requests = t.api_requests + EXCLUDED.api_requests,
           api_retries = t.api_retries + EXCLUDED.api_retries,
           api_throttled = t.api_throttled + EXCLUDED.api_throttled;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_runs_count_inserted_closed AFTER INSERT ON {schema}.sync_runs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_inserted_closed_runs();

-- History recorded before this migration counts once.
INSERT INTO {schema}.sync_run_totals (account, resource, status, runs, items_seen, items_written,
       api_requests, api_retries, api_throttled)
SELECT account, resource, status, count(*), sum(items_seen), sum(items_written),
       sum(api_requests), sum(api_retries), sum(api_throttled)
  FROM {schema}.sync_runs WHERE status <> 'running'
 GROUP BY account, resource, status;
