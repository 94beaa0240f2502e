-- ame: compatible
-- Orchestrations (seed 004): a ZIP of Python code kept as the versions of a project of its own. Each upload of a
-- name is a new version whose environment a packaging run builds once (the launcher's environment cache keeps it).
CREATE TABLE orchestrations (
    id              uuid        PRIMARY KEY,
    organisation_id text        NOT NULL REFERENCES organisations (id),
    name            text        NOT NULL,
    -- The AME project holding its versions and runs (`orch-<id hex>`; seed names may hold spaces).
    project         text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, name)
);

CREATE TABLE orchestration_versions (
    id                 uuid        PRIMARY KEY,
    orchestration_id   uuid        NOT NULL REFERENCES orchestrations (id) ON DELETE CASCADE,
    project_version_id text        NOT NULL,
    filename           text        NOT NULL,
    sha                text        NOT NULL,
    -- The directory of main.py in the archive ('' for its root).
    entry_dir          text        NOT NULL,
    -- The run that builds the environment; its state is the version's status.
    packaging_run_id   uuid,
    -- Why packaging failed, read once from the packaging run's output.
    error              text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orchestration_versions_newest_idx ON orchestration_versions (orchestration_id, created_at DESC);

-- A task: a run-once run or a schedule (a row of project_schedules in the orchestration's project) of one version.
-- Its runs are the runs of (organisation, project, run_task).
CREATE TABLE orchestration_tasks (
    id               uuid        PRIMARY KEY,
    organisation_id  text        NOT NULL REFERENCES organisations (id),
    orchestration_id uuid        NOT NULL REFERENCES orchestrations (id) ON DELETE CASCADE,
    version_id       uuid        NOT NULL REFERENCES orchestration_versions (id) ON DELETE CASCADE,
    name             text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('once', 'scheduled')),
    schedule         text        NOT NULL DEFAULT '',
    project          text        NOT NULL,
    run_task         text        NOT NULL,
    killed_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, project, run_task)
);
CREATE INDEX orchestration_tasks_updated_idx ON orchestration_tasks (organisation_id, updated_at DESC);
