-- ame: compatible
-- Pipelines the scheduler's coordinator drives: one row per pipeline run (the parent) and one per step (a child
-- run whose id is chosen here, before the api creates it). Every decision is taken under the parent's row lock
-- and written in the same transaction as the messages it sends (pipeline_outbox), so replicas and redeliveries
-- never run a step twice, and a restart loses nothing.

CREATE TABLE pipeline_runs (
    run_id           uuid        PRIMARY KEY,
    organisation     text        NOT NULL,
    started_by       text        NOT NULL DEFAULT '',
    -- The parent's RunSpec (ame.contracts.run.v1), with every step's spec.
    spec             bytea       NOT NULL,
    state            text        NOT NULL DEFAULT 'running'
                     CHECK (state IN ('running', 'stopping', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- The pipeline's own timeout: past it, the pipeline is stopped and ends timed_out.
    deadline         timestamptz,
    timed_out        boolean     NOT NULL DEFAULT false,
    reason           text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

CREATE INDEX pipeline_runs_deadline_idx ON pipeline_runs (deadline) WHERE state = 'running' AND deadline IS NOT NULL;

CREATE TABLE pipeline_steps (
    parent_run_id uuid        NOT NULL REFERENCES pipeline_runs (run_id) ON DELETE CASCADE,
    name          text        NOT NULL,
    stage         integer     NOT NULL,
    position      integer     NOT NULL,
    child_run_id  uuid        NOT NULL UNIQUE,
    -- Whose saved files later steps get: the child's own, or (a step reused by `ame runs resume`) the run that
    -- succeeded in the pipeline resumed.
    layer_run_id  uuid,
    state         text        NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'submitted', 'running', 'succeeded', 'failed', 'cancelled',
                                   'timed_out', 'lost', 'skipped')),
    attempt       integer     NOT NULL DEFAULT 1,
    exit_code     integer,
    reason        text        NOT NULL DEFAULT '',
    submitted_at  timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (parent_run_id, name)
);

-- Messages decided in a transaction, published after its commit (then deleted); a relay publishes those a
-- crashed or cut-off replica left, claiming them for a while first so it never publishes inside a transaction.
CREATE TABLE pipeline_outbox (
    id            bigserial   PRIMARY KEY,
    msg_id        text        NOT NULL,
    subject       text        NOT NULL,
    payload       bytea       NOT NULL,
    headers       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz
);
