-- The launcher owns leases: which replica executes which run attempt. A lease whose heartbeat stops
-- expires, and the reconciler reports its run instead of leaving it "running" forever.

CREATE TABLE leases (
    run_id       uuid        NOT NULL,
    attempt      integer     NOT NULL,
    launcher_id  text        NOT NULL,
    backend      text        NOT NULL,
    state        text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'finished')),
    project      text        NOT NULL DEFAULT '',
    task         text        NOT NULL DEFAULT '',
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    final_state  text,
    PRIMARY KEY (run_id, attempt)
);

CREATE INDEX leases_active_expiry_idx ON leases (expires_at) WHERE state = 'active';
CREATE INDEX leases_launcher_idx ON leases (launcher_id) WHERE state = 'active';
