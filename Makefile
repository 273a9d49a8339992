# One-command set-up: every target creates or refreshes .venv (and node_modules for Azurite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# dr for every OS user: archive_command and restore_command run as the database server's OS
# user, who cannot enter root's home, where the default Python (and so .venv) lives. Debian's
# system Python can be run by everyone; the installation must be world-readable.
SHARED_PYTHON ?= /usr/bin/python3
SHARED_PREFIX ?= /opt/dr-runbooks
SHARED_STAMP := $(SHARED_PREFIX)/.installed
SOURCES := $(shell find cli dr_runbooks flows tasks blocks -name '*.py' 2>/dev/null)

.PHONY: drill test check bench bench-physical shared-install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(SHARED_STAMP): pyproject.toml $(SOURCES)
	$(SHARED_PYTHON) -m venv $(SHARED_PREFIX)
	$(SHARED_PREFIX)/bin/python -m pip install --quiet --upgrade pip
	$(SHARED_PREFIX)/bin/python -m pip install --quiet --no-cache-dir .
	chmod -R a+rX $(SHARED_PREFIX)
	touch $@

## make shared-install: dr in $(SHARED_PREFIX) for every OS user (archive_command, restore_command)
shared-install: $(SHARED_STAMP)

node_modules/.bin/azurite-blob: package.json
	npm install --no-audit --no-fund --silent
	touch $@

## make drill: a local DR drill on embedded defaults (throwaway PostgreSQL, local repository)
drill: $(STAMP)
	$(BIN)/dr drill

## make test: the whole test suite against real PostgreSQL, Azurite and a Prefect test server
test: $(STAMP) node_modules/.bin/azurite-blob $(SHARED_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make check: ruff, mypy and the layer contracts (import-linter)
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy dr_runbooks flows tasks blocks cli
	$(BIN)/lint-imports

## make bench: the backup/restore benchmark (~1 GB database; takes several minutes)
bench: $(STAMP) node_modules/.bin/azurite-blob
	$(BIN)/python bench/postgres_backup.py

## make bench-physical: physical restore and WAL archiving against the plan (~1 GB; ~15 minutes)
bench-physical: $(STAMP) node_modules/.bin/azurite-blob $(SHARED_STAMP)
	$(BIN)/python bench/physical_restore.py

clean:
	rm -rf $(VENV) node_modules .dr .pytest_cache .mypy_cache .ruff_cache
