# The README's commands. `make test` installs what it needs (Python venv, Node test clients).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed
BENCH_JS := bench/js
BENCH_JS_STAMP := $(BENCH_JS)/node_modules/.installed

.PHONY: run test lint typecheck install bench bench-compare clean fuzz

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

# The fuzzer's long run (docs/SECURITY.md, "Fuzzing"): FUZZ_EXAMPLES random cases per property
# against a real server (`make test` runs the same file with a short, fixed set); counts and
# time per property in $(FUZZ_STATS). Failing cases are kept in /tmp/crdt-state-fuzz-examples
# and replayed first by the next run.
FUZZ_EXAMPLES ?= 3000
FUZZ_STATS ?= /tmp/crdt-state-fuzz-stats.json
fuzz: $(STAMP)
	CRDT_STATE_FUZZ_PROFILE=long CRDT_STATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	CRDT_STATE_FUZZ_STATS=$(FUZZ_STATS) $(BIN)/pytest -q -p no:cacheprovider tests/test_fuzz.py; \
	status=$$?; cat $(FUZZ_STATS); exit $$status

lint: $(STAMP)
	$(BIN)/ruff check crdt_state adapters tests bench migrations
	$(BIN)/ruff format --check crdt_state adapters tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(JS)/node_modules crdt-state-data

$(BENCH_JS_STAMP): $(BENCH_JS)/package.json $(BENCH_JS)/package-lock.json
	npm ci --prefix $(BENCH_JS) --no-audit --no-fund --silent
	touch $(BENCH_JS_STAMP)

# Benchmarks (docs/BENCHMARKS.md). Each installs its own tools (the load generator in bench/js;
# reference servers and py-spy into .bench/) and takes under 15 minutes on 2 cores.
bench: $(STAMP) $(BENCH_JS_STAMP)
	$(BIN)/python -m bench.run ours
	$(BIN)/python -m bench.report
	$(BIN)/python -m bench.bench_store > bench/results/store.json
	-$(BIN)/python -m bench.bench_git > bench/results/git.json  # exits 1 when a target is missed
	$(BIN)/python -m bench.bench_snapshots > bench/results/snapshots.json
	$(BIN)/python -m bench.report_storage

bench-compare: $(STAMP) $(BENCH_JS_STAMP)
	$(BIN)/python -m bench.run compare
	$(BIN)/python -m bench.report
