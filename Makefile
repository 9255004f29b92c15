# Two commands on a fresh machine (Python 3.11+, pip, make):
#   make demo   set up, seed the demo data and run the four care campaigns
#   make test   set up and run the whole test suite (SQLite, plus PostgreSQL when reachable)
# Both install what they need beyond Python first (.ci/install-tools.sh: a CJK
# font for fax; for the tests also Prism, playwright-core and Debian's chromium);
# when it is all there that is a few cheap checks.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Prefect's local API starts on first use; on a busy machine it needs more than 20 s.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Prefect keeps its local API's database here; it does not create parent folders.
demo: export PREFECT_HOME ?= $(CURDIR)/.careflow/prefect
test: export PREFECT_HOME ?= $(CURDIR)/.careflow/prefect-test

demo: $(STAMP)
	bash .ci/install-tools.sh demo
	mkdir -p "$$PREFECT_HOME"
	$(BIN)/careflow demo

test: $(STAMP)
	bash .ci/install-tools.sh test
	mkdir -p "$$PREFECT_HOME"
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check careflow segments channels webhooks flows service importers demo cli tests bench insight

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .careflow .pytest_cache
