# Two commands for a newcomer: `make run` and `make test`. Each creates .venv
# and installs what it needs, pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.DEFAULT_GOAL := help
.PHONY: help run cluster test test-setup test-cluster browser nginx lint bench soak simulate clean

# A comment's $$ (written so for make) is shown as the shell's $.
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/\$$\$$/$$/g' \
		| awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# In a variable: a comma written in $(call …)'s arguments would split them.
DEV_EXTRAS := .[test,lint]

# pyproject.toml's requires-python, checked first: pip refused an older Python only after a
# minute of resolving ("ResolutionImpossible"), and left a virtualenv that later runs reused.
PYTHON_OK := -c 'import sys; sys.exit(sys.version_info < (3, 11))'
VERSION_OF = $$(command -v $(1) >/dev/null && $(1) -V 2>&1 || echo "not found")

# pip is quiet (its output is pages long): say what it does, how long it takes, and how long it took.
INSTALL = @$(BIN)/python $(PYTHON_OK) || { echo "$(VENV) is $(call VERSION_OF,$(BIN)/python); \
	the ledger needs Python 3.11 or newer: remove it (make clean) and run again, with \
	PYTHON=python3.11 (or newer) if $(PYTHON) is older" >&2; exit 1; }; \
	started=$$(date +%s); \
	echo "pip: installing $(1) into $(VENV) (pinned by constraints.txt); the first time takes $(2), later runs skip this"; \
	$(PIP) $(3) && echo "pip: done in $$(( $$(date +%s) - started )) s"

# A virtualenv half made (Debian's python3 without python3-venv has no ensurepip) is removed:
# the next run took it as made, and found no pip in it.
$(BIN)/python:
	@$(PYTHON) $(PYTHON_OK) 2>/dev/null || { echo "$(PYTHON) is $(call VERSION_OF,$(PYTHON)); \
	the ledger needs Python 3.11 or newer: make run PYTHON=python3.11 (or newer)" >&2; exit 1; }
	@echo "creating the virtualenv $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "removed the half-made $(VENV): run make again once that is fixed" >&2; exit 1; }

$(VENV)/.run-installed: $(BIN)/python pyproject.toml constraints.txt
	$(call INSTALL,the ledger and its dependencies,about 30-60 s,-e .)
	@touch $@

# The Python client (clients/python) is a package of its own, installed editable beside
# the service: the e2e tests and the bench's setup talk to the service through it.
CLIENT := clients/python

$(VENV)/.dev-installed: $(BIN)/python pyproject.toml constraints.txt $(CLIENT)/pyproject.toml
	$(call INSTALL,the ledger and its Python client with their test and lint tools,about 1-3 minutes,-e '$(DEV_EXTRAS)' -e ./$(CLIENT))
	@touch $@ $(VENV)/.run-installed

$(VENV)/.cluster-installed: $(VENV)/.run-installed pyproject.toml constraints.txt
	$(call INSTALL,honcho for make cluster,a few seconds,-e '.[cluster]')
	@touch $@

$(VENV)/.bench-installed: $(BIN)/python pyproject.toml constraints.txt $(CLIENT)/pyproject.toml
	$(PIP) -e '.[test,lint,bench,cluster]' -e ./$(CLIENT)
	@touch $@ $(VENV)/.dev-installed $(VENV)/.run-installed $(VENV)/.cluster-installed

run: $(VENV)/.run-installed ## serve the API on 127.0.0.1:$${PORT:-8000} (embedded PostgreSQL, Stripe stand-in)
	$(BIN)/ledger serve

cluster: $(VENV)/.cluster-installed nginx ## the deployment's topology here: PostgreSQL primary + standby, 3 API replicas, projector, nginx on :$${PORT:-8000} (CLUSTER_ARGS="--replicas 2")
	$(BIN)/ledger dev cluster $(CLUSTER_ARGS)

test: test-setup ## run the whole suite against a real PostgreSQL
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-setup: $(VENV)/.dev-installed $(VENV)/.cluster-installed browser nginx ## install what `make test` needs, run nothing

test-cluster: $(VENV)/.dev-installed $(VENV)/.cluster-installed nginx ## only the cluster tests (tests/cluster: replicas, standby, faults through nginx)
	$(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)

browser: ## install Debian's chromium for the browser test, if missing (never fails the build)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium (Debian package) for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			|| echo "could not install chromium: the browser test will be skipped"; \
	else \
		echo "no /usr/bin/chromium (and no apt-get as root to install it): the browser test will be skipped"; \
	fi

nginx: ## install Debian's nginx for `make cluster` and its tests, if missing (never fails the build)
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing nginx (Debian package) for the cluster"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; } \
			|| echo "could not install nginx: the cluster tests will be skipped"; \
	else \
		echo "no nginx (and no apt-get as root to install it): the cluster tests will be skipped"; \
	fi

lint: $(VENV)/.dev-installed ## ruff and mypy
	$(BIN)/ruff check ledger api projections audit stripe_standin relay cluster tests bench clients
	$(BIN)/mypy

# Both PostgreSQL configurations, py-spy profiles for the CPU budget's stages.
BENCH_ARGS ?= --profile .bench/profiles

bench: $(VENV)/.bench-installed ## every benchmark against same-run baselines, embedded and TCP PostgreSQL (under 10 min)
	@if command -v wrk >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing wrk (Debian package), the HTTP load generator"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } \
			|| echo "could not install wrk: bench.run_all will stop"; \
	else \
		echo "no wrk (and no apt-get as root to install it): bench.run_all will stop"; \
	fi
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

soak: $(VENV)/.dev-installed ## mixed traffic for a bounded time (3 min; SOAK_ARGS="--seconds 60"), memory curve, then audit verify
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean: ## remove the virtualenv and caches (keeps .data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

simulate: $(VENV)/.dev-installed ## the seeded simulator at scale: SIM_SEEDS (50) seeds of SIM_STEPS (1000) steps, in parallel
	$(BIN)/python -m tests.simulation.run
