-- 0006: "sync now", safe to press any number of times. A request is a row; the ERP makes
-- one with `SELECT emag_sync.request_sync('main', 'orders')` (EXECUTE grantable on its own)
-- or `emag-sync trigger`. The run that next opens for the pair serves every request made
-- before it (open_run marks them); a request made while a run is in progress waits for one
-- follow-up run, so presses coalesce. NOTIFY emag_sync_requests wakes the daemons; they
-- also look every few seconds, and with no daemon running a request simply waits.

CREATE TABLE {schema}.sync_requests (
    id            bigserial   PRIMARY KEY,
    account       text        NOT NULL,
    resource      text        NOT NULL CHECK (resource IN ('offers', 'orders')),
    requested_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    requested_by  text        NOT NULL DEFAULT session_user,
    run_id        bigint,               -- the run that served it
    served_at     timestamptz
);
CREATE INDEX sync_requests_pending ON {schema}.sync_requests (account, resource) WHERE served_at IS NULL;
CREATE INDEX sync_requests_served ON {schema}.sync_requests (served_at) WHERE served_at IS NOT NULL;

-- Runs started by a request, counted like the other totals (emag_sync_requested_runs_total).
ALTER TABLE {schema}.sync_run_totals ADD COLUMN runs_requested bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION {schema}.count_closed_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.sync_run_totals AS t (account, resource, status, runs, items_seen,
           items_written, api_requests, api_retries, api_throttled, api_wait_s, runs_requested)
    VALUES (NEW.account, NEW.resource, NEW.status, 1, NEW.items_seen, NEW.items_written,
            NEW.api_requests, NEW.api_retries, NEW.api_throttled, NEW.api_wait_s,
            (NEW.trigger = 'request')::int)
    ON CONFLICT (account, resource, status) DO UPDATE
       SET runs = t.runs + 1, items_seen = t.items_seen + EXCLUDED.items_seen,
           items_written = t.items_written + EXCLUDED.items_written,
           api_requests = t.api_requests + EXCLUDED.api_requests,
           api_retries = t.api_retries + EXCLUDED.api_retries,
           api_throttled = t.api_throttled + EXCLUDED.api_throttled,
           api_wait_s = t.api_wait_s + EXCLUDED.api_wait_s,
           runs_requested = t.runs_requested + EXCLUDED.runs_requested;
    RETURN NULL;
END
$$;

-- One call, grantable on its own: SECURITY DEFINER with a fixed search_path, EXECUTE revoked
-- from PUBLIC. `account` must be configured (the daemon registers its pairs in sync_state);
-- `resource` is offers, orders or all. Returns the id of each request made.
CREATE FUNCTION {schema}.request_sync(account text, resource text DEFAULT 'all') RETURNS SETOF bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted text;
    made bigint;
BEGIN
    IF request_sync.resource IS NULL OR request_sync.resource NOT IN ('offers', 'orders', 'all') THEN
        RAISE EXCEPTION 'emag_sync.request_sync: unknown resource %, expected offers, orders or all',
            quote_nullable(request_sync.resource) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {schema}.sync_state s WHERE s.account = request_sync.account) THEN
        RAISE EXCEPTION 'emag_sync.request_sync: unknown account %, not configured in emag-sync (known: %)',
            quote_nullable(request_sync.account),
            coalesce((SELECT string_agg(DISTINCT s.account, ', ' ORDER BY s.account) FROM {schema}.sync_state s),
                     'none yet') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR wanted IN SELECT unnest(CASE request_sync.resource WHEN 'all' THEN ARRAY['offers', 'orders']
                                                           ELSE ARRAY[request_sync.resource] END) LOOP
        IF EXISTS (SELECT 1 FROM {schema}.sync_state s WHERE s.account = request_sync.account AND s.resource = wanted) THEN
            INSERT INTO {schema}.sync_requests (account, resource) VALUES (request_sync.account, wanted)
            RETURNING id INTO made;
            PERFORM pg_notify('emag_sync_requests',
                              json_build_object('account', request_sync.account, 'resource', wanted, 'id', made)::text);
            RETURN NEXT made;
        ELSIF request_sync.resource <> 'all' THEN
            RAISE EXCEPTION 'emag_sync.request_sync: account % does not sync %', request_sync.account, wanted
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION {schema}.request_sync(text, text) FROM PUBLIC;
