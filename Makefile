# One-command entry points. Needs only python3 (>= 3.10) and make.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Airflow's documented install uses a constraints file: ours pins the resolution for the pinned Airflow
# (constraints/, regenerate with scripts/make_constraints.sh). Without one for this Python, pip resolves.
PYVER = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
CONSTRAINTS ?= constraints/airflow-$(AIRFLOW_VERSION)-py$(PYVER).txt
EXTRAS ?= test,integration
# The installer of the pinned set: uv (pip installs it into the venv first; the same constraints, in
# about a quarter of pip's time on 2 cores, bytecode compiled as pip does), or INSTALLER=pip.
INSTALLER ?= uv
UV_VERSION ?= 0.13.9
ifeq ($(INSTALLER),uv)
INSTALL = $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode
else
INSTALL = $(BIN)/python -m pip install --quiet
endif

.PHONY: venv demo test test-fast lint bench integration clean dist check-wheel

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile $(wildcard constraints/*.txt)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip $(if $(filter uv,$(INSTALLER)),"uv==$(UV_VERSION)")
	@if [ -f "$(CONSTRAINTS)" ]; then echo "$(INSTALLER) install with constraints $(CONSTRAINTS)"; \
	  else echo "no $(CONSTRAINTS) for this Python: $(INSTALLER) resolves without constraints"; fi
	$(INSTALL) "apache-airflow==$(AIRFLOW_VERSION)" -e ".[$(EXTRAS)]" \
	  $(if $(wildcard $(CONSTRAINTS)),-c $(CONSTRAINTS))
	touch $(STAMP)

## Describe the bundled sample images end to end: emulator + real `airflow dags test` on SQLite.
demo: venv
	$(BIN)/python scripts/demo.py

## Lint, then the whole test suite (unit, end-to-end DAG runs, fault/soak and integration tiers) and
## the built wheel installed into a clean virtualenv running the demo DAG (beside the soak tier).
test: venv lint
	$(BIN)/python scripts/run_tests.py --wheel-check scripts/check_wheel.py

test-fast: venv
	$(BIN)/python -m pytest -m "not soak and not integration" -q

lint: venv
	$(BIN)/ruff check airflow_provider_apicore dags tests benchmarks scripts
	$(BIN)/ruff format --check airflow_provider_apicore dags tests benchmarks scripts

## sdist + wheel in dist/, checked by twine.
dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

## Build the wheel, install it (not editable) into a clean virtualenv, run the demo DAG from it.
check-wheel: venv
	$(BIN)/python scripts/check_wheel.py

bench: venv
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .airflow-home .demo results dist build
