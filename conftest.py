# The root conftest is the one pytest always loads, whichever directory a run starts in (libs/...,
# services/..., tests/...), and the only place pytest accepts `pytest_plugins` in every case.
pytest_plugins = ["tests.infra_fixtures"]
