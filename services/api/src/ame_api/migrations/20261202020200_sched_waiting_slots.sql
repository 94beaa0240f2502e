-- `overlap: queue`: at most one slot of a schedule waits for the schedule's previous run to end. The fire that
-- holds this row waits; another arriving meanwhile is dropped. The key is the waiting fire's idempotency key, so
-- its redelivery (the api replica holding it died) finds the row its own and waits on.
CREATE TABLE schedule_waiting (
    organisation_id text        NOT NULL REFERENCES organisations (id),
    project         text        NOT NULL,
    task            text        NOT NULL,
    idempotency_key text        NOT NULL,
    since           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, project, task)
);
