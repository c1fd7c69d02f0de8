-- 0010: one definition of how a closed run adds to sync_run_totals. The row trigger (a run
-- closing) and the statement trigger (rows inserted already closed: restores, imports)
-- each had their own copy of the upsert, and 0006 taught only the first to count
-- runs_requested. Both now call add_run_totals.

CREATE FUNCTION {schema}.add_run_totals(
    account text, resource text, status text, runs bigint, items_seen bigint, items_written bigint,
    api_requests bigint, api_retries bigint, api_throttled bigint, api_wait_s double precision,
    runs_requested bigint
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO {schema}.sync_run_totals AS t (account, resource, status, runs, items_seen,
           items_written, api_requests, api_retries, api_throttled, api_wait_s, runs_requested)
    VALUES (account, resource, status, runs, items_seen, items_written, api_requests, api_retries,
            api_throttled, api_wait_s, runs_requested)
    ON CONFLICT (account, resource, status) DO UPDATE
       SET runs = t.runs + EXCLUDED.runs, items_seen = t.items_seen + EXCLUDED.items_seen,
           items_written = t.items_written + EXCLUDED.items_written,
           api_requests = t.api_requests + EXCLUDED.api_requests,
           api_retries = t.api_retries + EXCLUDED.api_retries,
           api_throttled = t.api_throttled + EXCLUDED.api_throttled,
           api_wait_s = t.api_wait_s + EXCLUDED.api_wait_s,
           runs_requested = t.runs_requested + EXCLUDED.runs_requested;
$$;

CREATE OR REPLACE FUNCTION {schema}.count_closed_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.add_run_totals(NEW.account, NEW.resource, NEW.status, 1, NEW.items_seen,
            NEW.items_written, NEW.api_requests, NEW.api_retries, NEW.api_throttled, NEW.api_wait_s,
            (NEW.trigger = 'request')::int);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.count_inserted_closed_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.add_run_totals(account, resource, status, count(*), sum(items_seen)::bigint,
            sum(items_written)::bigint, sum(api_requests), sum(api_retries), sum(api_throttled),
            sum(api_wait_s), count(*) FILTER (WHERE trigger = 'request'))
       FROM inserted WHERE status <> 'running'
      GROUP BY account, resource, status;
    RETURN NULL;
END
$$;
