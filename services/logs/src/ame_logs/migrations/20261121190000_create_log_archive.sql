-- The logs service owns the durable archive of run output, which outlives the bus's retention and pods.

CREATE TABLE log_chunks (
    run_id     uuid        NOT NULL,
    attempt    integer     NOT NULL,
    first_seq  bigint      NOT NULL,
    last_seq   bigint      NOT NULL,
    -- The chunk's lines as the bus carried them (ame.contracts.log.v1.LogChunk, lines only).
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt, first_seq)
);

CREATE TABLE log_ends (
    run_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    state       text        NOT NULL,
    exit_code   integer,
    reason      text        NOT NULL DEFAULT '',
    total_lines bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt)
);
