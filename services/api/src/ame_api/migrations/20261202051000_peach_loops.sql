-- ame: compatible
-- PEACH task loops (seed 002): the tasks each project's trigger version declares in peach.yaml /
-- peach.conf/*.yaml, each loop's progress (one row per loop, locked by the one replica driving it), and every
-- execution of a task in a loop.

CREATE TABLE peach_tasks (
    organisation_id text        NOT NULL REFERENCES organisations (id),
    project         text        NOT NULL,
    task            text        NOT NULL,
    -- The loop: ('', 'metadata') for the shared metadata loop, (organisation, organisation) for its own.
    loop_owner      text        NOT NULL,
    loop_name       text        NOT NULL,
    version_id      text        NOT NULL,
    version_label   text        NOT NULL,
    spec            jsonb,
    -- Why the task cannot run here (executor spark without a Spark master); '' when it can.
    unsupported     text        NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, project, task)
);

CREATE INDEX peach_tasks_loop ON peach_tasks (loop_owner, loop_name);

CREATE TABLE peach_loops (
    loop_owner       text        NOT NULL,
    loop_name        text        NOT NULL,
    cycle            bigint      NOT NULL DEFAULT 0,
    -- This cycle's tasks, fixed when it started: a new version takes effect at the next cycle.
    plan             jsonb       NOT NULL DEFAULT '[]',
    position         integer     NOT NULL DEFAULT 0,
    current_run_id   uuid,
    cycle_started_at timestamptz,
    cycle_ended_at   timestamptz,
    PRIMARY KEY (loop_owner, loop_name)
);

CREATE TABLE peach_executions (
    id              bigserial   PRIMARY KEY,
    organisation_id text        NOT NULL,
    project         text        NOT NULL,
    task            text        NOT NULL,
    loop_owner      text        NOT NULL,
    loop_name       text        NOT NULL,
    cycle           bigint      NOT NULL,
    position        integer     NOT NULL,
    run_id          uuid,
    version_id      text        NOT NULL,
    version_label   text        NOT NULL,
    status          text        NOT NULL,
    reason          text        NOT NULL DEFAULT '',
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    UNIQUE (loop_owner, loop_name, cycle, position)
);

CREATE INDEX peach_executions_task ON peach_executions (organisation_id, project, task, started_at);
