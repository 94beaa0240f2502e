-- ame: compatible
-- The token a task run gets for `ame.Client()` (created_by `run:<run id>`) is revoked when its run ends: found here.
CREATE INDEX api_tokens_run_created_by_idx ON api_tokens (created_by) WHERE created_by LIKE 'run:%';
