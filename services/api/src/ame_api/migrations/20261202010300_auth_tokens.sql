-- API tokens: each belongs to one organisation with a scope, or is a server-admin token. Only the sha256 of the
-- secret is stored; a token is looked up by that hash on every request, so a revocation or an expiry applies
-- at the next request.

CREATE TABLE api_tokens (
    id              text        PRIMARY KEY,
    organisation_id text        NOT NULL REFERENCES organisations (id),
    scope           text        NOT NULL CHECK (scope IN ('read', 'run', 'admin', 'server-admin')),
    name            text        NOT NULL DEFAULT '',
    hash            bytea       NOT NULL UNIQUE,
    created_by      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    -- Set for a short-lived token that only follows this run's logs (a browser's EventSource sends it in the URL).
    run_id          uuid
);

CREATE INDEX api_tokens_organisation_idx ON api_tokens (organisation_id, created_at);

-- Who started each run: `token:<id>`, `trigger:<name>`; empty for runs from before tokens.
ALTER TABLE runs ADD COLUMN started_by text NOT NULL DEFAULT '';
