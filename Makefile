# The two commands a fresh clone needs (both install what they use):
#   make run    start AME's embedded default and run example work through it, showing the logs
#   make test   lint, type-check, check layering and generated code, then run every test
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
UV := python3 -m uv

.PHONY: help bootstrap run test check lint typecheck layering proto-check gen-proto pytest bench

help:
	@echo "make run | make test | make check | make bench | make gen-proto"

bootstrap:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --locked --python 3.11 --quiet

run: bootstrap
	$(UV) run --no-sync python examples/demo.py

test: bootstrap check pytest

check: lint typecheck layering proto-check

lint:
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .

typecheck:
	$(UV) run --no-sync mypy libs/ame/src libs/platform/src libs/server/src services/api/src services/scheduler/src services/launcher/src services/logs/src

layering:
	$(UV) run --no-sync lint-imports --no-cache

proto-check:
	$(UV) run --no-sync python tools/gen_proto.py --check

gen-proto:
	$(UV) run --no-sync python tools/gen_proto.py

# Two workers, a test file each at a time (module fixtures stay in one process): most of a test's time is spent
# waiting on the servers and processes it starts, so two files share the 2 cores of CI well. PYTEST_WORKERS=0
# runs serially. pytest exits 5 when it collected nothing; that is not a failure of the suite.
PYTEST_WORKERS ?= 2
pytest:
	$(UV) run --no-sync pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

bench: bootstrap
	$(UV) run --no-sync python bench/bench_runs.py
	$(UV) run --no-sync python bench/bench_auth.py
	$(UV) run --no-sync python bench/bench_validate.py
	$(UV) run --no-sync python bench/bench_env_cache.py
	$(UV) run --no-sync python bench/bench_logs.py
	$(UV) run --no-sync python bench/bench_push.py
	$(UV) run --no-sync python bench/bench_schedules.py
	$(UV) run --no-sync python bench/bench_materialise.py
	$(UV) run --no-sync python bench/bench_first_output.py
