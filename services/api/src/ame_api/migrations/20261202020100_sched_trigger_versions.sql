-- A project's trigger version: the version pushed last with `ame project push` (not by a remote `ame task run`),
-- whose schedules the scheduler runs. NULL until one is activated.
ALTER TABLE projects
    ADD COLUMN active_version_id    text CHECK (active_version_id ~ '^[0-9a-f]{64}$'),
    -- Bumped at each change of the project's schedule set (activation, pause, resume): the ProjectSchedules
    -- message carries it, and the scheduler ignores any generation older than the last it applied.
    ADD COLUMN schedules_generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN activated_at         timestamptz;

-- The api's copy of each project's schedules (the front door reads and pauses them here; the scheduler owns
-- firing state). Replaced wholesale at each activation; a task keeps its pause across versions.
CREATE TABLE project_schedules (
    organisation_id    text             NOT NULL REFERENCES organisations (id),
    project            text             NOT NULL,
    task               text             NOT NULL,
    cron               text             NOT NULL,
    timezone           text             NOT NULL,
    catch_up           text             NOT NULL,
    overlap            text             NOT NULL,
    jitter_seconds     double precision NOT NULL,
    -- The run each slot starts (ame.domain.RunSpec as JSON), built from the trigger version.
    spec               jsonb            NOT NULL,
    project_version_id text             NOT NULL,
    paused             boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (organisation_id, project, task)
);
