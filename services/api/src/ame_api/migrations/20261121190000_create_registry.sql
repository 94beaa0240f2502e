-- The api service owns organisations, projects and their versions, and the run registry.

CREATE TABLE organisations (
    id         text        PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO organisations (id, name) VALUES ('default', 'default');

CREATE TABLE projects (
    id              uuid        PRIMARY KEY,
    organisation_id text        NOT NULL REFERENCES organisations (id),
    name            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, name)
);

-- An uploaded project directory: an archive in the object store, identified by its digest.
CREATE TABLE project_versions (
    id          uuid        PRIMARY KEY,
    project_id  uuid        NOT NULL REFERENCES projects (id),
    digest      text        NOT NULL,
    archive_key text        NOT NULL,
    size_bytes  bigint      NOT NULL,
    spec        jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, digest)
);

CREATE TABLE runs (
    id              uuid        PRIMARY KEY,
    organisation_id text        NOT NULL REFERENCES organisations (id),
    project         text        NOT NULL,
    task            text        NOT NULL,
    spec            jsonb       NOT NULL,
    state           text        NOT NULL CHECK (state IN
                        ('queued', 'launching', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'lost')),
    attempt         integer     NOT NULL DEFAULT 1,
    exit_code       integer,
    reason          text        NOT NULL DEFAULT '',
    trigger         text        NOT NULL DEFAULT 'api',
    parent_run_id   uuid        REFERENCES runs (id),
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, idempotency_key)
);

CREATE INDEX runs_project_task_idx ON runs (organisation_id, project, task, id DESC);
CREATE INDEX runs_active_idx ON runs (state) WHERE state IN ('queued', 'launching', 'running');
CREATE INDEX runs_parent_idx ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- Transactional outbox: a message is written in the same transaction as the row it announces and published
-- by the relay, so a crash between commit and publish delays a launch instead of losing it.
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    msg_id     text        NOT NULL,
    subject    text        NOT NULL,
    payload    bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
