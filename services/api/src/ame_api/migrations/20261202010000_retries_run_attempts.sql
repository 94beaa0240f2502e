-- Attempts: a retry is a new attempt of the same run. Each attempt keeps its own state, times, exit code and
-- reason; the run row keeps the run's overall state and the newest attempt's number.

CREATE TABLE run_attempts (
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    state       text        NOT NULL CHECK (state IN
                    ('queued', 'launching', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'lost')),
    exit_code   integer,
    reason      text        NOT NULL DEFAULT '',
    launcher_id text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt)
);

-- Runs recorded before attempts were: their one attempt is the run.
INSERT INTO run_attempts (run_id, attempt, state, exit_code, reason, created_at, started_at, finished_at, updated_at)
SELECT id, attempt, state, exit_code, reason, created_at, started_at, finished_at, updated_at FROM runs;

-- The launch command of the run's first attempt (ame.contracts.run.v1.LaunchRun), from which a retry's command
-- is made: the same run, another attempt. NULL for runs recorded before retries were.
ALTER TABLE runs ADD COLUMN launch_command bytea;
