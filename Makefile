# The two commands of the README: `make run` and `make test`. Both work on a fresh clone.
# `make lint`: ruff, mypy and the import contracts of pyproject.toml (.ci/run runs it first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench-ingest clean

$(VENV)/.installed-run: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/billing migrate
	$(BIN)/billing demo --host $(HOST) --port $(PORT)
	$(BIN)/billing serve --host $(HOST) --port $(PORT)

# Debian's Chromium drives the browser tests (tests/browser); Playwright never downloads a browser.
CHROMIUM := /usr/bin/chromium
SUDO = $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null; then echo sudo; fi)
APT_INSTALL = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

# One pytest worker per core, at most four: each has its own databases and servers on free ports.
test: $(VENV)/.installed-dev $(if $(filter 1,$(BILLING_SKIP_BROWSER)),,$(CHROMIUM))
	$(BIN)/python -m pytest --numprocesses auto --maxprocesses 4

$(CHROMIUM):
	$(APT_INSTALL) || { $(SUDO) apt-get update && $(APT_INSTALL); }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check billing tests migrations bench
	$(BIN)/ruff format --check billing tests migrations bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
