-- The server's secret store: one row per (organisation, name). Only ciphertext is kept: AES-256-GCM under the key
-- named by key_id (from settings), with a fresh 96-bit nonce per write; the organisation and name are the
-- associated data, so a ciphertext moved to another row does not decrypt.
CREATE TABLE secrets (
    organisation_id text NOT NULL,
    name text NOT NULL,
    ciphertext bytea NOT NULL,
    nonce bytea NOT NULL,
    key_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, name)
);

-- Rotation re-encrypts what is still under an old key.
CREATE INDEX secrets_key_id_idx ON secrets (key_id);
