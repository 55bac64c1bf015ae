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

run: venv
	$(VENV)/bin/alertclf simulate --out $(DEMO) --seed 7 --days 1
	$(VENV)/bin/alertclf validate --alerts $(DEMO)/alert_data.csv --graph $(DEMO)/graph_data.json --out $(DEMO)/validation

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
