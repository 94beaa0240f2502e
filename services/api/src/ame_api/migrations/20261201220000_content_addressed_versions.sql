-- Project versions become content-addressed: a version is a manifest of files whose blobs live in the object
-- store, and its id is the manifest's sha256. The archive-based table was never written, so it is replaced.

DROP TABLE project_versions;

CREATE TABLE project_versions (
    seq         bigserial   UNIQUE,
    project_id  uuid        NOT NULL REFERENCES projects (id),
    id          text        NOT NULL CHECK (id ~ '^[0-9a-f]{64}$'),
    file_count  integer     NOT NULL,
    size_bytes  bigint      NOT NULL,
    -- [[path, mode, sha256, size], ...] in path order.
    manifest    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);

CREATE INDEX project_versions_newest_idx ON project_versions (project_id, seq DESC);

-- A row is written only after the blob is whole in the object store, so a commit can check its blobs here.
CREATE TABLE project_blobs (
    organisation_id text        NOT NULL REFERENCES organisations (id),
    sha256          text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes      bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, sha256)
);
