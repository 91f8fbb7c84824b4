# trialdesk: `make run` and `make test` are all a fresh machine needs (Python 3.11+, make).
# Both create .venv on first use and reinstall only when pyproject.toml has changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PASSWORD := trialdesk-demo
PYTEST_ARGS ?=
# Tests run in parallel (pytest-xdist), one worker per core of the 2-core CI machine; modules
# with a module-scoped fixture stay on one worker (tests/conftest.py). PYTEST_WORKERS=0 runs
# them in this process.
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv run test docs

help:
	@echo "make run    set up .venv, initialise ./trialdesk.db with the flagship demo study"
	@echo "make test   ruff check, ruff format --check, mypy, pytest (the whole suite)"
	@echo "make docs   regenerate docs/traceability.md, cli.md, permissions.md, refusals.md"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"trialdesk needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# The stamp is newer than pyproject.toml exactly when the installed dependencies are current.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing trialdesk and its dependencies into $(VENV) (first time: a minute or two)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

define RUN_HELP

Demo users, password '$(DEMO_PASSWORD)':
  admin, manager, crc, monitor, statistician, dsmb   (all sites)
  coordinator, implanter                            (site S101)

Try, from this folder:
  export TRIALDESK_PASSWORD=$(DEMO_PASSWORD)
  $(BIN)/trialdesk subject register --site S101 --user coordinator
  $(BIN)/trialdesk subject list --user coordinator
  $(BIN)/trialdesk subject show S101-0001 --user coordinator
  $(BIN)/trialdesk lists show --user statistician
  $(BIN)/trialdesk audit verify
  $(BIN)/trialdesk design assess --protocol flagship
  $(BIN)/trialdesk --help                            (docs/cli.md has every command)
endef
export RUN_HELP

# `trialdesk init --demo` is idempotent: a second run reports the study as already there.
# `trialdesk simulate` then fills the demo study with a synthetic trial two years into
# enrolment, ending today (once: a study with subjects is left as it is).
# Then the web pages and the API are served until Ctrl-C.
# A second `make run` on the same ./trialdesk.db finds the simulated study
# (scripts/demo_ready.py, standard library only) and goes straight to the server, which
# applies any new migration itself.
run: venv
	@if [ -z "$$TRIALDESK_DATABASE_URL" ] && [ -f trialdesk.key ] && \
		$(BIN)/python -S scripts/demo_ready.py trialdesk.db FLAGSHIP; then \
		echo "trialdesk.db holds the simulated demo study: serving it"; \
	else \
		$(BIN)/trialdesk init --demo --demo-password '$(DEMO_PASSWORD)' && \
		$(BIN)/trialdesk simulate --subjects 352 --sites 75 --as-of today --enrolment-years 2 \
			--screened-per-site-month 0.22 --seed 1; \
	fi
	@echo "$$RUN_HELP"
	@printf '\nOpen http://127.0.0.1:8000 and sign in as a demo user (Ctrl-C stops the server).\n'
	$(BIN)/trialdesk serve --host 127.0.0.1 --port 8000

# Every check runs even when an earlier one fails, so one run shows everything to fix.
# pytest's exit code 5 (no tests collected) is a failure like any other.
test: venv
	@failed=(); \
	step() { echo "==> $$*"; "$$@" || failed+=("$$*"); }; \
	step $(BIN)/ruff check .; \
	step $(BIN)/ruff format --check .; \
	step $(BIN)/mypy; \
	step $(BIN)/mypy tests; \
	echo "==> $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)"; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then failed+=("pytest: no tests collected (exit 5)"); \
	elif [ $$rc -ne 0 ]; then failed+=("pytest (exit $$rc)"); fi; \
	if [ $${#failed[@]} -gt 0 ]; then \
		echo "make test FAILED:"; printf '  %s\n' "$${failed[@]}"; exit 1; \
	fi; \
	echo "make test: all checks passed"

docs: venv
	$(BIN)/python scripts/traceability.py
	$(BIN)/python scripts/cli_reference.py
	$(BIN)/python scripts/access_reference.py
	$(BIN)/python scripts/flagship_v2.py
