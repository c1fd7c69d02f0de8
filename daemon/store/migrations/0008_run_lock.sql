-- 0008: one definition of "this run still holds its lock", for status, the monitor's
-- metrics and its compare-and-set alike (three copies had drifted: status could call a
-- dead run's lock held while the monitor counted it lost). A run holds its lock when a
-- live session holds the pair's advisory lock AND no newer run of the pair exists (that
-- run could only open after taking the lock, so this one lost it: the key is per pair).

CREATE FUNCTION {schema}.run_holds_lock(run {schema}.sync_runs) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND ((l.classid::bigint << 32) | l.objid::bigint) = run.lock_key)
       AND NOT EXISTS (SELECT 1 FROM {schema}.sync_runs n
                        WHERE n.account = run.account AND n.resource = run.resource
                          AND n.started_at > run.started_at)
$$;
