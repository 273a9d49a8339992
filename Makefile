# One-command set-up: every target creates or refreshes .venv (and node_modules for Azurite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: drill test check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

node_modules/.bin/azurite-blob: package.json
	npm install --no-audit --no-fund --silent
	touch $@

## make drill: a local DR drill on embedded defaults (throwaway PostgreSQL, local repository)
drill: $(STAMP)
	$(BIN)/dr drill

## make test: the whole test suite against real PostgreSQL, Azurite and a Prefect test server
test: $(STAMP) node_modules/.bin/azurite-blob
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

clean:
	rm -rf $(VENV) node_modules .dr .pytest_cache .mypy_cache .ruff_cache
