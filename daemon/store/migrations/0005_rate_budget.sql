-- 0005: one rate budget per eMAG login, whichever process spends it. eMAG counts requests
-- per login; a run spends its login's budget for one route group (orders, or everything
-- else) with its own limiter, without a round trip per request, and hands over where the
-- budget stands with every save of its progress (page commits, heartbeats, the close).
-- The next run of that login, in any process or after a restart, starts from there.
-- `holder` is the run spending it; a close hands it back (NULL), so a holder that is still
-- set when the next run takes over died without saying what it sent last.

CREATE TABLE {schema}.rate_budgets (
    login        text             NOT NULL,  -- API host and username of the seller login
    route_group  text             NOT NULL CHECK (route_group IN ('orders', 'other')),
    next_at      timestamptz      NOT NULL DEFAULT clock_timestamp(),
    slowdown     double precision NOT NULL DEFAULT 1,
    holder       bigint,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (login, route_group)
);
CREATE INDEX rate_budgets_holder ON {schema}.rate_budgets (holder) WHERE holder IS NOT NULL;
