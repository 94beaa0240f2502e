"""Root pytest configuration: the shared real-infrastructure fixtures for every test tree in the workspace."""

pytest_plugins = ["tests.infra_fixtures", "tests.stack_fixtures", "tests.vault_harness"]
