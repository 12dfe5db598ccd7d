# The README's commands. `make test` installs what it needs (Python venv, Node test clients).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: run test lint typecheck install bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund --silent
	touch $(JS_STAMP)

install: $(STAMP) $(JS_STAMP)

run: $(STAMP)
	$(BIN)/crdt-state serve --dev

test: install
	$(BIN)/ruff check crdt_state adapters tests bench migrations
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check crdt_state adapters tests bench migrations
	$(BIN)/ruff format --check crdt_state adapters tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(JS)/node_modules crdt-state-data
