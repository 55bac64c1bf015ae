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

.PHONY: run test lint format venv tools clean

venv: $(STAMP)

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

MODELS ?= data/models
RESULTS ?= results
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

lint: venv
	$(VENV)/bin/ruff check src tests entrypoints benchmarks
	$(VENV)/bin/ruff format --check src tests entrypoints benchmarks

format: venv
	$(VENV)/bin/ruff check --fix src tests entrypoints benchmarks
	$(VENV)/bin/ruff format src tests entrypoints benchmarks

test: venv tools lint
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
