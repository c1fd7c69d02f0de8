-- 0007: every run that ends says so. A trigger on the close (by the daemon, a monitor or
-- `emag-sync recover`) sends NOTIFY emag_sync_runs with the run as JSON, and queues one
-- delivery per configured webhook (webhook_targets, kept by the daemons from their
-- configuration) in the same transaction: the outbox a daemon's sender drains with bounded
-- retries, never on the run's time. webhook_deliveries is also the delivery log.

CREATE TABLE {schema}.webhook_targets (
    url         text        PRIMARY KEY,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.webhook_deliveries (
    id               bigserial   PRIMARY KEY,
    run_id           bigint      NOT NULL,
    url              text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,   -- the receiver's HTTP status, if it answered
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX webhook_deliveries_due ON {schema}.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_created ON {schema}.webhook_deliveries (created_at);

CREATE FUNCTION {schema}.run_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event jsonb := jsonb_build_object(
        'event', 'run.ended', 'run_id', NEW.id, 'account', NEW.account, 'resource', NEW.resource,
        'mode', NEW.mode, 'trigger', NEW.trigger, 'status', NEW.status,
        'started_at', NEW.started_at, 'finished_at', NEW.finished_at,
        'pages_done', NEW.pages_done, 'items_seen', NEW.items_seen, 'items_written', NEW.items_written,
        'items_unchanged', NEW.items_unchanged, 'items_invalid', NEW.items_invalid,
        'api_requests', NEW.api_requests, 'api_throttled', NEW.api_throttled,
        'error', left(NEW.error, 500));
BEGIN
    PERFORM pg_notify('emag_sync_runs', event::text);
    INSERT INTO {schema}.webhook_deliveries (run_id, url, payload)
    SELECT NEW.id, t.url, event FROM {schema}.webhook_targets t;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_runs_ended AFTER UPDATE OF status ON {schema}.sync_runs
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION {schema}.run_ended();
