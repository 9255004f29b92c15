# Two commands on a fresh machine (Python 3.11+, pip, make):
#   make demo   set up, seed the demo data and run the four care campaigns
#   make test   set up and run the whole test suite (SQLite, plus PostgreSQL when reachable)
# Both install what they need beyond Python first (.ci/install-tools.sh: a CJK
# font for fax; for the tests also Prism, playwright-core and Debian's chromium);
# when it is all there that is a few cheap checks.
# Python packages come from the lock (README "Dependencies"): the venv holds
# exactly the versions in requirements/dev.txt, made from uv.lock by `make lock`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCKED := $(VENV)/.locked
STAMP  := $(VENV)/.installed

# Prefect's local API starts on first use; on a busy machine it needs more than 20 s.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test lint bench lock clean

# A different lock builds the venv anew, so a package the lock dropped goes too;
# the hashes make pip refuse anything the lock does not name. $(LOCKED) is a copy
# of the lock installed: the same lock written again reinstalls nothing.
$(LOCKED): requirements/dev.txt
	cmp -s requirements/dev.txt $(LOCKED) || { \
	  $(PYTHON) -m venv --clear $(VENV) && \
	  $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt; }
	cp requirements/dev.txt $(LOCKED)

# careflow itself, editable; its dependencies are already there from the lock
$(STAMP): $(LOCKED) pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps -e .
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
	$(BIN)/ruff check careflow tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Resolve pyproject.toml's ranges on PyPI into uv.lock, keeping every locked
# version that still fits (LOCK_ARGS='--upgrade-package prefect' moves one on),
# and export the pinned, hashed lists that pip installs from.
lock: $(STAMP)
	$(BIN)/uv lock $(LOCK_ARGS)
	$(BIN)/uv export --quiet --frozen --no-emit-project -o requirements/prod.txt
	$(BIN)/uv export --quiet --frozen --no-emit-project --extra test -o requirements/dev.txt

clean:
	rm -rf $(VENV) .careflow .pytest_cache
