# Two commands on a fresh clone: `make run` (server on ./data) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# hnswlib compiled without -march=native: a cached build must not SIGILL on another CPU.
export HNSWLIB_NO_NATIVE := 1

.PHONY: run test lint bench clean openapi

$(BIN)/shoal: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-binary hnswlib -e '.[dev]'
	touch $(BIN)/shoal

run: $(BIN)/shoal
	$(BIN)/shoal serve

test: $(BIN)/shoal
	bash .ci/system-packages.sh
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(BIN)/shoal
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.restart
	$(BIN)/python -m bench.curator_recovery
	$(BIN)/python -m bench.curator

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

openapi: $(BIN)/shoal
	$(BIN)/python -c "import json; from api.app import create_app; from server.settings import Settings; print(json.dumps(create_app(Settings()).openapi(), indent=1))" > docs/openapi.json
