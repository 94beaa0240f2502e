-- ame: compatible
-- Model trainings the scheduler sequences: the training run, then (once it succeeded) the validation run. The run
-- ids are chosen here, before either run is asked for, so a run's end is matched to its model whatever the order
-- in which events arrive. A row is written before anything is published, so a scheduler that restarts at any point
-- asks again, and the requests' msg ids and idempotency keys (model:<version>:train|validate) make that harmless.
CREATE TABLE model_trainings (
    model_version_id  text        PRIMARY KEY,
    organisation      text        NOT NULL,
    training_run_id   uuid        NOT NULL UNIQUE,
    -- NULL when the model has no validationTask.
    validation_run_id uuid        UNIQUE,
    -- The ModelTrainRequested (ame.contracts.model.v1) as received: the runs' specs.
    request           bytea       NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    training_requested_at   timestamptz,
    validation_requested_at timestamptz
);
