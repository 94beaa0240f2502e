-- ame: compatible
-- Git project sources (`ame projectsrc add URL`): a repository branch whose head becomes a project version at
-- each sync. One row per source; the row is also the sync's lease, so that with N api replicas one sync of a
-- source runs at a time, and a replica that dies mid-sync leaves a lease that expires and is taken again.
CREATE TABLE project_sources (
    id               uuid        PRIMARY KEY,
    organisation_id  text        NOT NULL REFERENCES organisations (id),
    url              text        NOT NULL,
    -- As given at add time, else the remote's default branch (resolved then).
    branch           text        NOT NULL,
    -- The project's directory inside the repository ('' for its root).
    path             text        NOT NULL DEFAULT '',
    interval_seconds double precision NOT NULL,
    -- Names in the organisation's secret store, never values: the credential git uses, and the key that signs
    -- push webhooks. '' for none.
    secret_name      text        NOT NULL DEFAULT '',
    hook_secret_name text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- The last outcome: Pending | Synchronized | Error (Synchronising is shown while a lease is held)
    state            text        NOT NULL DEFAULT 'Pending',
    reason           text        NOT NULL DEFAULT '',
    -- The last commit that became (or already was) a version, and when; the project and version it gave.
    synced_commit    text        NOT NULL DEFAULT '',
    synced_at        timestamptz,
    project          text        NOT NULL DEFAULT '',
    version_id       text        NOT NULL DEFAULT '',
    -- The last head judged (a version, no project file, or a broken file): the same head is not judged again.
    checked_commit   text        NOT NULL DEFAULT '',
    checked_state    text        NOT NULL DEFAULT '',
    checked_reason   text        NOT NULL DEFAULT '',
    -- Due times on the platform clock (simulated in tests): the next periodic sync.
    next_sync_at     timestamptz NOT NULL,
    -- On-demand syncs (sync now, push webhooks) count up; a sync serves what was requested when it began.
    requested        bigint      NOT NULL DEFAULT 0,
    served           bigint      NOT NULL DEFAULT 0,
    -- The lease (real database time): who syncs now, until when, and a fencing number bumped per claim.
    lease_owner      text        NOT NULL DEFAULT '',
    lease_until      timestamptz,
    lease_seq        bigint      NOT NULL DEFAULT 0,
    UNIQUE (organisation_id, url, path, branch)
);

CREATE INDEX project_sources_due_idx ON project_sources (next_sync_at);

-- The short commit hash a version was synced from (the version is content-addressed: the same tree at a later
-- commit keeps its id and takes the later commit's tag).
ALTER TABLE project_versions ADD COLUMN git_commit text;
