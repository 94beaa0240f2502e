-- Retries the scheduler is to launch: one row per (run, attempt), written when the api asks for the attempt and
-- settled when its launch command is published (or the run was cancelled first). Kept here, not in memory, so a
-- scheduler that restarts during a backoff still launches the attempt, once: the row is claimed with
-- FOR UPDATE SKIP LOCKED, and the launch carries Nats-Msg-Id "launch:<run>:<attempt>".

CREATE TABLE run_retries (
    run_id      uuid        NOT NULL,
    attempt     integer     NOT NULL CHECK (attempt >= 2),
    due_at      timestamptz NOT NULL,
    -- The LaunchRun to publish (ame.contracts.run.v1), already for this attempt.
    launch      bytea       NOT NULL,
    state       text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'launched', 'cancelled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    settled_at  timestamptz,
    PRIMARY KEY (run_id, attempt)
);

CREATE INDEX run_retries_due_idx ON run_retries (due_at) WHERE state = 'pending';
