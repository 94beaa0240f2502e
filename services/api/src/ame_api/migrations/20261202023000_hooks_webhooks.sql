-- Webhooks (ame.yml `triggers: {webhook: {secret: KEY}}`). The hooks of a version are read from its ame.yml once,
-- when it is committed (it is validated then anyway), with the run spec a delivery starts, so that serving a
-- delivery never reads the object store. Which version's hooks answer is the project's trigger version.
CREATE TABLE project_version_webhooks (
    project_id  uuid NOT NULL,
    version_id  text NOT NULL,
    task        text NOT NULL,
    -- The name of the secret (AME's secret store, the project's organisation) that signs deliveries.
    secret_name text NOT NULL,
    -- The ame.domain.RunSpec of a run of the task from this version, without arguments.
    spec        jsonb NOT NULL,
    PRIMARY KEY (project_id, version_id, task),
    FOREIGN KEY (project_id, version_id) REFERENCES project_versions (project_id, id) ON DELETE CASCADE
);

-- Recent deliveries of each hook (`ame hooks list`), pruned to the newest few per hook as each one is recorded.
-- Only deliveries to a hook that exists are recorded; a refused one has no run.
CREATE TABLE webhook_deliveries (
    seq             bigserial   PRIMARY KEY,
    organisation_id text        NOT NULL REFERENCES organisations (id),
    project         text        NOT NULL,
    task            text        NOT NULL,
    delivery_id     text        NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          integer     NOT NULL,
    outcome         text        NOT NULL,
    run_id          uuid
);

CREATE INDEX webhook_deliveries_hook_idx ON webhook_deliveries (organisation_id, project, task, seq DESC);
