# One-command entry points. Needs only python3 (>= 3.10) and make.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench integration clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]"
	touch $(STAMP)

## Describe the bundled sample images end to end: emulator + real `airflow dags test` on SQLite.
demo: venv
	$(BIN)/python scripts/demo.py

## Lint, then the whole test suite (unit, end-to-end DAG runs, fault/soak and integration tiers).
test: venv
	$(BIN)/ruff check airflow_provider_apicore dags tests benchmarks scripts
	$(BIN)/python scripts/run_tests.py

test-fast: venv
	$(BIN)/python -m pytest -m "not soak and not integration" -q

lint: venv
	$(BIN)/ruff check airflow_provider_apicore dags tests benchmarks scripts
	$(BIN)/ruff format --check airflow_provider_apicore dags tests benchmarks scripts

bench: venv
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .airflow-home .demo results
