# backsync: `make demo` runs the walk-through, `make test` the suite (both set up first).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests always run with the test settings, whatever DJANGO_SETTINGS_MODULE says.
PYTEST := $(PY) -m pytest --ds=config.settings.test
# Two pytest processes (a file each at a time: a file's tests share fixtures and timing);
# each has its own test database and moto. PYTEST_JOBS=0 runs in one process.
PYTEST_JOBS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --dist loadfile)

.PHONY: setup test test-fast lint format run demo up down bench

setup:
	scripts/bootstrap.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PYTEST) $(PYTEST_PARALLEL)

test-fast: setup
	$(PYTEST) -m "not e2e and not faults and not deploy and not browser and not bench_smoke"

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

run: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver 127.0.0.1:8000

# Local stack (moto, web, worker, relay): `make up` returns when all is healthy and prints the
# URLs; `make down` stops what it started. SERVICES, MOTO_PORT, WEB_PORT: see scripts/stack.sh.
up: setup
	scripts/stack.sh up

down:
	scripts/stack.sh down

# The walk-through (DESIGN.md) end to end on a fresh stack and database, then stop it.
demo: setup
	scripts/demo.sh

# Benchmarks against the real local stack (scratch database, own moto/worker/relay); each
# prints a table and appends it to bench/RESULTS.md. See bench/README.md.
bench: setup
	$(PY) bench/apply_throughput.py
	$(PY) bench/capture_cost.py
	# On moto the worker polls short by default (SQS_WAIT_TIME_SECONDS=0): moto's FIFO long
	# poll skips, for its whole wait, the groups that were in flight when it began.
	$(PY) bench/end_to_end.py
	$(PY) bench/scale_out.py --repeat 2
	$(PY) bench/reconcile_memory.py
	$(PY) bench/reconcile_memory.py --rows 1000000 --synthetic
