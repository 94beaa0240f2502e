-- The scheduler owns schedules and their fires. (schedule_id, slot) is unique, so however many scheduler
-- replicas race for a slot, or however often one restarts across it, a slot fires once.

CREATE TABLE schedules (
    id              uuid        PRIMARY KEY,
    organisation_id text        NOT NULL,
    project         text        NOT NULL,
    task            text        NOT NULL,
    cron            text        NOT NULL,
    -- The run to start at each slot (ame.domain.RunSpec as JSON).
    spec            jsonb       NOT NULL,
    enabled         boolean     NOT NULL DEFAULT true,
    next_fire_at    timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, project, task)
);

CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled;

CREATE TABLE schedule_fires (
    schedule_id uuid        NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    slot        timestamptz NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    missed      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (schedule_id, slot)
);
