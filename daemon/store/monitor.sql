-- The monitor's queries, by name (loaded with queries.sql). "-- name: X" starts a
-- query; the comment line after it says what it is for. {schema} is quoted at load.
-- Whether a run holds its lock is run_holds_lock (migration 0008), nowhere else.

-- name: fail_stuck_run
-- Compare-and-set: fail run $1 only if it is STILL running and stuck (stale heartbeat $2 s
-- and lock gone, or older than $3 s) at the moment of the update; $4 names the monitor.
UPDATE {schema}.sync_runs r
   SET status = 'failed', finished_at = now(),
       error = CASE WHEN r.started_at < now() - make_interval(secs => $3)
                    THEN format('stuck: running for %s s, over the max run age of %s s; failed at %s by %s',
                                round(extract(epoch FROM now() - r.started_at)), $3::float8,
                                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), $4::text)
                    ELSE format('stuck: no heartbeat for %s s (threshold %s s) and its lock is gone, '
                                'the process died; failed at %s by %s',
                                round(extract(epoch FROM now() - r.heartbeat_at)), $2::float8,
                                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), $4::text)
               END
 WHERE r.id = $1 AND r.status = 'running'
   AND (r.started_at < now() - make_interval(secs => $3)
        OR (r.heartbeat_at < now() - make_interval(secs => $2) AND NOT {schema}.run_holds_lock(r)))
RETURNING r.id, r.account, r.resource, r.error;

-- name: trim_runs
-- Retention: delete up to $2 closed runs started more than $1 days ago, oldest first,
-- keeping each known pair's last completed run (its last-success metric never vanishes).
DELETE FROM {schema}.sync_runs
 WHERE id IN (SELECT r.id FROM {schema}.sync_runs r
               WHERE r.started_at < now() - make_interval(days => $1) AND r.status <> 'running'
                 AND r.id <> ALL (ARRAY(SELECT ok.id FROM {schema}.sync_state s
                                   CROSS JOIN LATERAL (
                                         SELECT c.id FROM {schema}.sync_runs c
                                          WHERE c.account = s.account AND c.resource = s.resource
                                            AND c.status = 'completed'
                                          ORDER BY c.finished_at DESC LIMIT 1) ok))
               ORDER BY r.started_at
               LIMIT $2
               FOR UPDATE SKIP LOCKED);

-- name: monitor_statement_timeout
-- Bound every statement of the scrape's read-only transaction ($1 like '5000ms').
SELECT set_config('statement_timeout', $1, true);

-- name: monitor_ping
-- Is the database there (for /healthz)?
SELECT 1;

-- name: monitor_pairs
-- Per known pair (sync_state): last completed run and last closed run, by index, LIMIT 1 each.
SELECT s.account, s.resource,
       extract(epoch FROM ok.finished_at)::float8 AS last_success_ts,
       extract(epoch FROM ok.finished_at - ok.started_at)::float8 AS last_success_duration_s,
       ok.items_seen AS last_success_items_seen, ok.items_written AS last_success_items_written,
       ok.api_latency_p50_s, ok.api_latency_p95_s, ok.api_latency_max_s,
       last.status AS last_status
  FROM {schema}.sync_state s
  LEFT JOIN LATERAL (
        SELECT r.started_at, r.finished_at, r.items_seen, r.items_written, r.api_latency_p50_s,
               r.api_latency_p95_s, r.api_latency_max_s FROM {schema}.sync_runs r
         WHERE r.account = s.account AND r.resource = s.resource AND r.status = 'completed'
         ORDER BY r.finished_at DESC LIMIT 1) ok ON true
  LEFT JOIN LATERAL (
        SELECT r.status FROM {schema}.sync_runs r
         WHERE r.account = s.account AND r.resource = s.resource AND r.status <> 'running'
         ORDER BY r.started_at DESC LIMIT 1) last ON true
 ORDER BY s.account, s.resource;

-- name: monitor_totals
-- The monotonic run totals the 0002 trigger keeps per (account, resource, status).
SELECT account, resource, status, runs, items_seen, items_written, api_requests, api_retries,
       api_throttled, api_wait_s, runs_requested
  FROM {schema}.sync_run_totals;

-- name: monitor_webhooks
-- Webhook deliveries still to make (the partial index of pending ones), and the oldest's age.
SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
  FROM {schema}.webhook_deliveries WHERE status = 'pending';

-- name: trim_requests
-- Retention: served requests older than $1 days, $2 at a time (pending ones stay).
DELETE FROM {schema}.sync_requests
 WHERE id IN (SELECT id FROM {schema}.sync_requests
               WHERE served_at < now() - make_interval(days => $1) LIMIT $2);

-- name: trim_deliveries
-- Retention: finished webhook deliveries older than $1 days, $2 at a time.
DELETE FROM {schema}.webhook_deliveries
 WHERE id IN (SELECT id FROM {schema}.webhook_deliveries
               WHERE created_at < now() - make_interval(days => $1) AND status <> 'pending' LIMIT $2);

-- name: monitor_table_counts
-- Offers (not marked missing) and orders per account, for the pass to cache.
SELECT account, 'offers' AS kind, count(*) AS n FROM {schema}.offers WHERE missing_since IS NULL
 GROUP BY account
UNION ALL
SELECT account, 'orders', count(*) FROM {schema}.orders GROUP BY account;
