-- ame: compatible
-- Templates from other projects (ame.yml `fromTemplate: {name, project}` or `project.template`) are resolved when a
-- version is committed, against the latest version of each named project in the organisation. The versions used
-- are pinned here (project name -> version id), so the version resolves the same way for as long as it exists,
-- whatever is pushed to those projects later.
ALTER TABLE project_versions ADD COLUMN template_pins jsonb NOT NULL DEFAULT '{}'::jsonb;
