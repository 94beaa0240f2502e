-- ame: compatible
-- Data sets (ame.yml `dataSets: [{name, path, task | taskRef}]`). A version's data sets are read from its ame.yml
-- once, when it is committed, with the run spec of the producing task and the hash of its definition (path and
-- resolved task), so that a consumer's submit never reads the object store.
CREATE TABLE project_version_data_sets (
    project_id      uuid NOT NULL,
    version_id      text NOT NULL,
    name            text NOT NULL,
    path            text NOT NULL,
    definition_hash text NOT NULL,
    -- The ame.domain.RunSpec of the producing task's run from this version.
    producer_spec   jsonb NOT NULL,
    PRIMARY KEY (project_id, version_id, name),
    FOREIGN KEY (project_id, version_id) REFERENCES project_versions (project_id, id) ON DELETE CASCADE
);

-- One row per production of a data set: the unique key makes concurrent consumers (and api replicas) share one.
-- A changed definition is a new row; `ame datasets refresh` adds the next generation of the same definition.
CREATE TABLE data_sets (
    id              uuid        PRIMARY KEY,
    organisation_id text        NOT NULL REFERENCES organisations (id),
    project         text        NOT NULL,
    name            text        NOT NULL,
    definition_hash text        NOT NULL,
    generation      integer     NOT NULL DEFAULT 1,
    path            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'running', 'ready', 'failed')),
    run_id          uuid,
    version_id      text,
    file_count      integer     NOT NULL DEFAULT 0,
    size_bytes      bigint      NOT NULL DEFAULT 0,
    reason          text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, project, name, definition_hash, generation)
);

CREATE INDEX data_sets_run_idx ON data_sets (run_id);
CREATE INDEX data_sets_list_idx ON data_sets (organisation_id, project, name, updated_at DESC);

-- The productions a queued run reads, kept while it waits for any of them (`waiting`): when the last one is ready
-- the run is admitted with their versions; when one fails the run fails with the reason.
CREATE TABLE run_data_sets (
    run_id      uuid    NOT NULL,
    data_set_id uuid    NOT NULL REFERENCES data_sets (id) ON DELETE CASCADE,
    name        text    NOT NULL,
    waiting     boolean NOT NULL,
    PRIMARY KEY (run_id, data_set_id)
);

CREATE INDEX run_data_sets_waiting_idx ON run_data_sets (data_set_id) WHERE waiting;
