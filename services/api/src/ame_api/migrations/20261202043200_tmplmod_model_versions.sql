-- ame: compatible
-- Model versions (ame.yml `models:`): one row per training asked for (`ame model train`). A version's state is not
-- stored: it follows from the states of its training and validation runs in `runs`, so it cannot disagree with the
-- registry. The run ids are filled in when the scheduler asks for each run (ModelRunRequested).
CREATE TABLE model_versions (
    id                 text        PRIMARY KEY,
    organisation_id    text        NOT NULL REFERENCES organisations (id),
    project            text        NOT NULL,
    model              text        NOT NULL,
    number             bigint      NOT NULL CHECK (number >= 1),
    project_version_id text        NOT NULL,
    has_validation     boolean     NOT NULL,
    training_run_id    uuid,
    validation_run_id  uuid,
    -- The MLflow registry version the training run registered, once found (AME_MLFLOW_TRACKING_URI).
    mlflow_version     text        NOT NULL DEFAULT '',
    -- Why a run of the version could not be started at all (refused at submit); the version is then failed.
    failure            text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, project, model, number)
);

CREATE INDEX model_versions_latest_idx ON model_versions (organisation_id, project, model, number DESC);
