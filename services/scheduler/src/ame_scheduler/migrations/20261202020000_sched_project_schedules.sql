-- Schedules come from a project's trigger version (the api's ProjectSchedules message). A schedule keeps its id
-- for its (organisation, project, task) across versions, so a re-push that keeps a task's schedule keeps its
-- fires: (schedule_id, slot) stays the guard against a double fire across the switch, and the slot last fired
-- carries over.

ALTER TABLE schedules
    ADD COLUMN timezone           text             NOT NULL DEFAULT 'UTC',
    ADD COLUMN catch_up           text             NOT NULL DEFAULT 'none' CHECK (catch_up IN ('none', 'latest', 'all')),
    ADD COLUMN overlap            text             NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip', 'queue')),
    ADD COLUMN jitter_seconds     double precision NOT NULL DEFAULT 0,
    ADD COLUMN project_version_id text             NOT NULL DEFAULT '',
    -- False once the task (or its schedule) left the project's trigger version; kept so the id, and with it
    -- the fires, survive if it comes back.
    ADD COLUMN active             boolean          NOT NULL DEFAULT true,
    -- When the next slot is due: next_fire_at plus that slot's jitter.
    ADD COLUMN due_at             timestamptz,
    ADD COLUMN last_slot          timestamptz;

UPDATE schedules SET due_at = next_fire_at;
ALTER TABLE schedules ALTER COLUMN due_at SET NOT NULL;
DROP INDEX schedules_due_idx;
CREATE INDEX schedules_due_idx ON schedules (due_at) WHERE enabled AND active;

-- A fire is recorded with its ScheduleFired in the tick's transaction and published after the commit (no
-- publish while the schedule rows are locked). A replica that dies in between leaves published_at empty; the
-- relay publishes it once relay_after has passed (Nats-Msg-Id and the api's idempotency key make it one run).
ALTER TABLE schedule_fires
    ADD COLUMN payload      bytea,
    ADD COLUMN published_at timestamptz,
    ADD COLUMN relay_after  timestamptz NOT NULL DEFAULT now() + interval '10 seconds';

CREATE INDEX schedule_fires_unpublished_idx ON schedule_fires (relay_after)
    WHERE published_at IS NULL AND NOT missed;

-- The last ProjectSchedules generation applied per project: an older one arriving late is ignored.
CREATE TABLE schedule_projects (
    organisation_id    text        NOT NULL,
    project            text        NOT NULL,
    generation         bigint      NOT NULL,
    project_version_id text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, project)
);
