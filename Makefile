# Two commands for a newcomer: `make demo` (a whole soak on the embedded staging stack)
# and `make test`. Both create or reuse the project's virtual environment in .venv and
# the Prisma CLI in include/prisma/node_modules (needs Node.js 18.18+ and npm).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCENARIO ?= healthy
TIME_SCALE ?= 300
DEMO_ARGS ?=

# The default plan's Prisma project (include/plans/default.yaml: migration.prisma_project).
PRISMA_PROJECT := include/prisma
PRISMA_CLI := $(PRISMA_PROJECT)/node_modules/.installed-lock.json

.PHONY: demo test lint airflow venv prisma-cli clean bench

venv: $(VENV)/.installed

# The real Prisma CLI the default plan runs (`prisma migrate status`), from its Prisma
# project's lock file; a no-op while node_modules/.installed-lock.json (the lock file,
# copied there after npm ci succeeded) is newer than the lock file. --ignore-scripts: with
# the JavaScript schema engine no engine binary is needed, so nothing but npm packages is
# downloaded.
prisma-cli: $(PRISMA_CLI)

$(PRISMA_CLI): $(PRISMA_PROJECT)/package-lock.json
	cd $(PRISMA_PROJECT) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	cp $(PRISMA_PROJECT)/package-lock.json $@

$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

# The demo exits 0 on GO, 1 NO-GO, 2 INCONCLUSIVE, 3 no final decision (see demo/run.py);
# make itself then exits 2 and names the demo's code in its "Error N" line.
# RUNNER=dags-test (default): `airflow dags test`, one task at a time, in one process.
# RUNNER=airflow: the real components (api-server, scheduler, dag-processor, triggerer,
# LocalExecutor), triggered through the REST API, with a progress display; not the default
# yet: on 2 cores its own load once raised the app's latency into a NO-GO (docs/demo.md).
# More flags: make demo DEMO_ARGS="--require-sign-off --sign-off reject".
# RUNNER=celery: the same with the CeleryExecutor (demo/celery_cluster.py: Redis, two Celery
# workers in their own network namespaces, backups in a local S3 server); needs root and redis-server.
RUNNER ?= dags-test
demo: venv prisma-cli
	$(PY) -m demo.run --runner $(RUNNER) --scenario $(SCENARIO) --time-scale $(TIME_SCALE) $(DEMO_ARGS)

# The Airflow UI on the local staging stack until Ctrl-C (demo/ui.py): prints the URL and
# the login. AIRFLOW_ARGS="--port 8081 --users 20000 --scenario legacy-code".
# EXECUTOR=celery: Redis and two Celery workers in their own network namespaces, backups in
# a local S3 server (demo/celery_cluster.py; needs root and redis-server).
AIRFLOW_ARGS ?=
EXECUTOR ?= local
# XDG_RUNTIME_DIR: yours, else a private .state/runtime (demo/__init__.py, as for make demo).
airflow: venv prisma-cli
	$(PY) -m demo.ui --executor $(EXECUTOR) $(AIRFLOW_ARGS)

# ruff (pyproject.toml: pyflakes and pycodestyle's error classes) before the tests.
# ruff everywhere; mypy on the package and the DAG file (pyproject.toml [tool.mypy]). The DAG
# file is checked on its own: its module name is the package's (migration_soak).
lint: venv
	$(PY) -m ruff check plugins dags demo tests bench
	MYPYPATH=plugins $(PY) -m mypy plugins/migration_soak
	MYPYPATH=plugins $(PY) -m mypy dags/migration_soak.py

test: venv prisma-cli lint
	$(PY) -m pytest

# The checks' database time over one whole 24 h default-plan soak, at SIZE users (an embedded
# PostgreSQL seeded in a temporary folder; execution logs in proportion): bench/soak_load.py,
# figures in bench/README.md. SIZE=10000000 for the issue's 10 M users (about 20-25 minutes on 2 cores).
# Then the rollback of the dropped columns against the naive path, by both rollback_method values
# (bench/rollback_scale.py: about 2 minutes at 1 M users, about 40 at 10 M).
SIZE ?= 1000000
bench: venv
	$(PY) bench/soak_load.py --users $(SIZE) --json .state/bench/soak_load_$(SIZE).json
	$(PY) bench/rollback_scale.py --users $(SIZE) --json .state/bench/rollback_scale_$(SIZE).json

clean:
	rm -rf .state reports
