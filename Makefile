# Two commands for a fresh machine: `make run` and `make test`.
# Both build their own virtual environment (.venv) from the pinned pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
DEMO ?= data/demo
export MLFLOW_DISABLE_TELEMETRY := true

AZURITE := .tools/node_modules/.bin/azurite-blob

.PHONY: run test bench lint format venv spark java tools browser ui clean reliability

venv: $(STAMP)

# The Spark engine's tests: pyspark 4.3.0 is on PyPI only as an sdist (~1 min to build,
# 0.45 GB). Its wheel is built once into a cache outside the clone, so a fresh clone on the
# same machine installs it in seconds; pip prefers that wheel to the sdist.
WHEELS ?= $(HOME)/.cache/alertclf/wheels
PYSPARK_WHEEL := $(WHEELS)/pyspark-4.3.0-py2.py3-none-any.whl

SPARK_STAMP := $(VENV)/.spark-installed

spark: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP) | $(PYSPARK_WHEEL)
	$(PY) -m pip install -q --find-links $(WHEELS) -e '.[spark]'
	@touch $@

$(PYSPARK_WHEEL):
	mkdir -p $(WHEELS)
	$(PYTHON) -m pip wheel -q --no-deps pyspark==4.3.0 -w $(WHEELS)

# Spark needs Java (17; 21 works too): Debian's headless JRE when none is installed.
java:
	@if command -v java >/dev/null || [ -n "$$JAVA_HOME" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "Java 17 is missing and apt-get is not available: install a JRE 17"; exit 1; \
	fi; \
	echo "installing Java (apt-get install -y openjdk-17-jre-headless)"; \
	apt-get install -y -q openjdk-17-jre-headless || { apt-get update -q && apt-get install -y -q openjdk-17-jre-headless; } || { \
		echo "could not install openjdk-17-jre-headless (run as root, or: sudo apt-get install -y openjdk-17-jre-headless)"; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# System pieces the tests start themselves: Azurite (Azure Blob emulator) from npm.
tools: $(AZURITE)

$(AZURITE):
	@command -v npm >/dev/null || (echo "npm is needed for Azurite: apt-get install -y nodejs npm" && exit 1)
	npm install --no-save --no-audit --no-fund --prefix .tools azurite@3.35.0

# Headless Chromium for the browser tests: Debian's package, driven by Python playwright
# (never `playwright install`, whose browser download does not work here).
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "$(CHROMIUM) is missing and apt-get is not available: install Debian's chromium package"; exit 1; \
	fi; \
	echo "installing chromium (apt-get install -y chromium)"; \
	apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; } || { \
		echo "could not install chromium with apt-get (run as root, or: sudo apt-get install -y chromium)"; exit 1; }

MODELS ?= data/models
RESULTS ?= results
UI_PORT ?= 5000
MLFLOW_RUN = PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$$($(VENV)/bin/alertclf store --models $(MODELS) --log-level WARNING)" $(VENV)/bin/mlflow run . --env-manager local

# The demo: simulate two days of alerts, retrain (registry: staging -> production),
# classify, print the top incidents. Everything lands in data/ and results/.
run: venv
	$(VENV)/bin/alertclf simulate --out $(DEMO) --seed 7 --days 2 --scenario mixed
	$(VENV)/bin/alertclf validate --alerts $(DEMO)/alert_data.csv --graph $(DEMO)/graph_data.json --out $(DEMO)/validation --log-level WARNING
	$(MLFLOW_RUN) -e retrain --experiment-name alertclf-retrain -P history=$(DEMO)/alert_data.csv -P graph=$(DEMO)/graph_data.json -P models=$(MODELS)
	$(MLFLOW_RUN) -e classify --experiment-name alertclf-classify -P alerts=$(DEMO)/alert_data.csv -P graph=$(DEMO)/graph_data.json -P models=$(MODELS) -P output=$(RESULTS)
	@echo
	@echo "Results:   $(RESULTS)/ (newest folder; incident_groups.csv is the ranked list)"
	@echo "MLflow UI: make ui  (store: $(MODELS)/mlflow.db)"

# The MLflow UI over the project's store: lean (one worker, no job runner), local only.
ui: venv
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)  (store: $(abspath $(MODELS))/mlflow.db; Ctrl+C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server \
		--backend-store-uri sqlite:///$(abspath $(MODELS))/mlflow.db \
		--default-artifact-root $(abspath $(MODELS))/mlruns \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

lint: venv
	$(VENV)/bin/ruff check src tests entrypoints benchmarks
	$(VENV)/bin/ruff format --check src tests entrypoints benchmarks

format: venv
	$(VENV)/bin/ruff check --fix src tests entrypoints benchmarks
	$(VENV)/bin/ruff format src tests entrypoints benchmarks

# Everything but the long load and soak runs (marker `bench`: `make bench`), on two
# pytest-xdist workers taking whole files (tests/conftest.py hands out the longest first):
# most long tests wait on processes, locks and servers, so two workers on 2 cores took
# 833 -> 555 s (3 workers: 543 s). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: venv spark java tools browser lint
	$(VENV)/bin/python -m pytest -q -m "not bench" --durations=15 \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Speed and memory beside the I/O floor (benchmarks/results.md), quality against ground
# truth (benchmarks/quality.md), grouping under other alert timings (benchmarks/timing.md),
# and the 500k-alert storm and 200-cycle scheduler soak.
bench: venv tools
	-$(VENV)/bin/python benchmarks/bench.py
	-$(VENV)/bin/python benchmarks/quality.py
	-$(VENV)/bin/python benchmarks/timing.py
	$(VENV)/bin/python -m pytest -q -m bench

# The reliability suites alone (bad input, faults, security, load and soak); they
# rewrite RELIABILITY.md. `make test` runs all but the load and soak (`make bench`).
reliability: venv tools
	$(VENV)/bin/python -m pytest -q tests/test_reliability_fuzz.py tests/test_reliability_faults.py \
		tests/test_reliability_security.py tests/test_reliability_load.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
