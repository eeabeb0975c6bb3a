# Bastion task runner. `make run` serves the embedded profile; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: run test lint unit test-embedded test-scaleout e2e bench lock clean browser observatory

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever a lock file or the project metadata changes.
$(STAMP): $(BIN)/python requirements.lock requirements-dev.lock pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bastion serve

# Chromium for the browser suite comes from Debian; playwright never downloads a browser here.
# tests/e2e launches exactly $(CHROMIUM), so that path (not whatever `chromium` is first on
# PATH) decides whether to install. Idempotent: a no-op once the file is there. Not root?
# apt-get runs through sudo. A failed `apt-get update` is only a warning (the cached lists
# or packages may do); a failed install, or no $(CHROMIUM) afterwards, stops the build.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "no apt-get here: install Chromium at $(CHROMIUM) for the browser suite" >&2; exit 1; \
	fi; \
	echo "installing Debian's chromium for the browser suite"; \
	$(SUDO) apt-get -qq -o DPkg::Lock::Timeout=300 update \
	  || echo "warning: apt-get update failed; trying the cached package lists" >&2; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  -o DPkg::Lock::Timeout=300 chromium >/dev/null \
	  || { echo "apt-get install chromium failed" >&2; exit 1; }; \
	[ -x $(CHROMIUM) ] || { echo "chromium installed but $(CHROMIUM) is missing" >&2; exit 1; }; \
	echo "installed: $$($(CHROMIUM) --version 2>/dev/null)"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r src --severity-level medium
	$(BIN)/lint-imports

# The MDN HTTP Observatory scanner for tests/server/test_observatory.py, from the lock file;
# --ignore-scripts: its postinstall would download the HSTS preload and TLD lists.
observatory:
	npm ci --ignore-scripts --prefix tests/observatory

test-embedded: $(STAMP) browser observatory
	BASTION_TEST_PROFILE=embedded $(BIN)/pytest -q $(PYTEST_ARGS) || exit $$?

test-scaleout: $(STAMP) browser
	BASTION_TEST_PROFILE=scaleout $(BIN)/pytest -q -m "not e2e" tests/functional tests/security $(PYTEST_ARGS)

test: lint test-embedded test-scaleout

# Benchmarks (not part of `make test`): ~10 minutes, loads 127.0.0.x only, results in
# bench/results/. wrk comes from Debian, installed like chromium above when missing.
# BENCH_ARGS passes options through, e.g. BENCH_ARGS="--profiles embedded --rounds 5";
# DOCUMENTS_BENCH_ARGS does the same for the vault's upload/download/search scenario.
bench: $(STAMP) $(BENCH_STAMP)
	@if ! command -v wrk >/dev/null 2>&1; then \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "no apt-get here: install wrk for the benchmarks" >&2; exit 1; \
	  fi; \
	  echo "installing Debian's wrk for the benchmarks"; \
	  $(SUDO) apt-get -qq -o DPkg::Lock::Timeout=300 update \
	    || echo "warning: apt-get update failed; trying the cached package lists" >&2; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    -o DPkg::Lock::Timeout=300 wrk >/dev/null \
	    || { echo "apt-get install wrk failed" >&2; exit 1; }; \
	fi
	BASTION_BENCH_BIN=$(CURDIR)/$(BENCH_VENV)/bin $(BIN)/python -m bench.run $(BENCH_ARGS)
	BASTION_BENCH_BIN=$(CURDIR)/$(BENCH_VENV)/bin $(BIN)/python -m bench.documents $(DOCUMENTS_BENCH_ARGS)

# The servers under test run from a runtime-only environment, as in production: the dev
# tools (bandit pulls in rich and pygments, which structlog then imports) would inflate
# every worker's memory.
$(BENCH_STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(BENCH_STAMP)

# Re-pin dependencies with hashes (needs pip-tools in the active environment).
lock:
	pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras -o requirements.lock requirements.in
	pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras -o requirements-dev.lock requirements-dev.in

clean:
	rm -rf $(VENV) $(BENCH_VENV) .mypy_cache .ruff_cache
