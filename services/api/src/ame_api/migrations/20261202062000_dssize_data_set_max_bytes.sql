-- ame: compatible
-- A data set's declared `size:` as each version declares it: the most its producing run may store (NULL: no limit).
-- Code that does not know the column keeps writing NULL and producing without a limit.

ALTER TABLE project_version_data_sets ADD COLUMN max_bytes bigint;
