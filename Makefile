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

.PHONY: drill test check bench bench-cli bench-encryption bench-physical shared-install standard-tools screenshots clean

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

## make standard-tools: age and zstd, which restore an encrypted backup without dr-runbooks
## (docs/encryption.md; its test runs them). Installed with apt-get where this runs as root;
## elsewhere that test is skipped, saying why.
standard-tools:
	@if command -v age >/dev/null && command -v zstd >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age zstd \
			|| echo "could not install age and zstd: the standard-tools restore test will skip"; \
	else echo "age and zstd are not installed: the standard-tools restore test will skip"; fi

## make test: the whole test suite against real PostgreSQL, Azurite and a Prefect test server
test: $(STAMP) node_modules/.bin/azurite-blob $(SHARED_STAMP) standard-tools
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

## make bench-encryption: backup and restore with and without age encryption (~1 GB; ~15 minutes)
bench-encryption: $(STAMP) node_modules/.bin/azurite-blob
	$(BIN)/python bench/encryption.py --rounds 3

## make bench-cli: the fixed cost of a dr command without a configured Prefect server
bench-cli: $(STAMP)
	$(BIN)/python bench/cli_overhead.py --repeat 5

## make bench-physical: physical restore, WAL archiving and RPO against the plan (~1 GB; ~25 minutes)
bench-physical: $(STAMP) node_modules/.bin/azurite-blob $(SHARED_STAMP)
	$(BIN)/python bench/physical_restore.py

## make screenshots: the pictures of docs/ui.md, remade on a real Prefect server and its UI, the
## project deployed, a throwaway PostgreSQL and headless Chromium (Debian's package; installed
## with apt-get where this runs as root). Playwright, no dependency of the project, goes into .venv.
screenshots: $(STAMP)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "/usr/bin/chromium is missing: apt-get install chromium" >&2; exit 1; fi
	@$(BIN)/python -c 'import playwright' 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet 'playwright>=1.45,<2'
	$(BIN)/python tools/screenshots.py --out docs/ui

clean:
	rm -rf $(VENV) node_modules .dr .pytest_cache .mypy_cache .ruff_cache
