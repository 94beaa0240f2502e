-- Admission: organisation limits and the queue of runs waiting for a slot. A run is launched (its launch
-- command written to the outbox) only when the admission step admits it; see ame_api.admission.

-- No row, or a NULL column, means no limit.
CREATE TABLE organisation_limits (
    organisation_id         text             PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    max_runs                integer          CHECK (max_runs >= 1),
    max_gpus                integer          CHECK (max_gpus >= 0),
    default_timeout_seconds double precision CHECK (default_timeout_seconds > 0),
    updated_at              timestamptz      NOT NULL DEFAULT now()
);

-- Runs waiting for admission, with the launch command that is published once they are admitted.
-- loop '' is the organisation's own queue.
CREATE TABLE admission_queue (
    seq             bigserial   PRIMARY KEY,
    run_id          uuid        NOT NULL UNIQUE REFERENCES runs (id),
    organisation_id text        NOT NULL,
    loop            text        NOT NULL DEFAULT '',
    gpus            integer     NOT NULL DEFAULT 0,
    subject         text        NOT NULL,
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The head of each (organisation, loop) queue is found by a loose index scan of this index.
CREATE INDEX admission_queue_group_idx ON admission_queue (organisation_id, loop, seq);

-- Runs holding a slot: admitted, and not yet recorded as ended by the registry.
CREATE TABLE admissions (
    run_id          uuid        PRIMARY KEY,
    organisation_id text        NOT NULL,
    loop            text        NOT NULL DEFAULT '',
    gpus            integer     NOT NULL DEFAULT 0,
    admitted_at     timestamptz NOT NULL DEFAULT now()
);

-- Round robin across organisations: the organisation whose last turn is oldest goes first.
CREATE TABLE admission_turns (
    organisation_id text   PRIMARY KEY,
    last_turn       bigint NOT NULL
);

CREATE SEQUENCE admission_turn_seq;

-- When the run was admitted (its launch command written); NULL while it waits, and for runs from before.
ALTER TABLE runs ADD COLUMN admitted_at timestamptz;
