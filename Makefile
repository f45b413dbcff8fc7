# `make run`: the gateway in front of a real local SeaweedFS catalog, with a first service user.
# `make test`: lint, type-check and the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
CONFIG ?= config/gateway.toml

.PHONY: run shell test test-fast lint pytest chromium postgres nginx bench bench-quick soak soak-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(PIP) -e '.[local,fast]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(PIP) -e '.[local,fast,test]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/pangolin-gateway demo --config $(CONFIG)

# A Python with PyIceberg and DuckDB (the test extra), for pasting what `make run` prints.
shell: $(VENV)/.installed-test
	$(BIN)/python

test: $(VENV)/.installed-test lint pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gateway admin_cli tests
	$(BIN)/ruff format --check gateway admin_cli tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# iceberg-js for the client-compatibility tests (npm ci's lock copy doubles as the stamp).
tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --no-update-notifier

# Debian's Chromium for the browser tests (tests/browser, driven by Playwright).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Debian's PostgreSQL server for the store's tests (tests/postgres.py starts one per session,
# as the package's postgres user when run as root); the newest /usr/lib/postgresql/*/bin is used.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# Debian's nginx for the forward-auth tests (the shipped templates: auth_request, proxy_cache).
nginx:
	test -x /usr/sbin/nginx || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

pytest: $(VENV)/.installed-test tests/js/node_modules/.package-lock.json chromium postgres nginx
	$(BIN)/pytest

# The fast layers alone (unit tests and the app in front of a fake upstream, about a minute):
# no SeaweedFS, no real clients, no processes but PostgreSQL for the tests that ask for it.
# `make test` runs everything.
test-fast: $(VENV)/.installed-test postgres
	$(BIN)/pytest tests/unit tests/http

# Not part of `make test`: installs wrk and nginx (Debian packages); `make bench` takes about
# 45 minutes on our 2-core VMs (5 interleaved rounds of everything), `make bench-quick` about 6 (the fast-upstream
# proxy comparison and the PostgreSQL store's rows, results to var/bench-quick.md).
$(VENV)/.installed-bench: $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(PIP) -e '.[local,fast,test,bench]'
	touch $@

bench: $(VENV)/.installed-bench nginx
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PYSPY=$(BIN)/py-spy $(BIN)/python bench/run.py

bench-quick: $(VENV)/.installed-bench nginx
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	mkdir -p var
	$(BIN)/python bench/run.py --quick --out var/bench-quick.md

# Not part of `make test` either: the soak test (bench/soak.py), `serve --workers 2` before the
# fast upstream at half its measured maximum with a mix of keys, tokens, key rotations and
# hostile requests; `make soak` runs 30 minutes, `make soak-quick` 3 (about 4 with set-up), the
# same report, to the "## Soak" section of bench/results.md. Installs wrk (Debian) if missing;
# exits 1 if a target is missed.
soak: $(VENV)/.installed-bench
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/soak.py

soak-quick: $(VENV)/.installed-bench
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/soak.py --quick

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules
