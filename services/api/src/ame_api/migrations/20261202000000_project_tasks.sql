-- `ame task list`: the tasks of each project are those of its latest pushed version. The task names are read
-- from the version's ame.yml once, when it is committed (it is validated then anyway), so listing them never
-- reads the object store. Versions committed before this migration list no tasks until pushed again.

ALTER TABLE project_versions ADD COLUMN task_names text[] NOT NULL DEFAULT '{}';

-- The version pushed last (a re-push of an older version makes it the latest again), and when.
ALTER TABLE projects ADD COLUMN latest_version_id text;
ALTER TABLE projects ADD COLUMN latest_pushed_at timestamptz;
