# postfix-sidecar: the README's two commands live here.
# The venv uses Debian's /usr/bin/python3 so that the pipe(8) user (not root) can run it.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN = $(VENV)/bin
# `make run` reads this file, explicitly (not /etc/postfix-sidecar/sidecar.toml nor $SIDECAR_CONFIG)
CONFIG ?= contrib/make-run.toml
RUN_ARGS ?=
# `make test` spreads the test files over this many pytest-xdist workers (0: one process, in order)
TEST_WORKERS ?= 2
# --dist loadfile: a test file stays on one worker (its module fixtures are built once)
XDIST = -n $(TEST_WORKERS) --dist loadfile

.PHONY: venv deps system-deps run test test-unit test-integration test-postfix lint bench man clean

$(BIN)/activate:
	@if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then \
	  echo "installing python3-venv (apt)"; apt-get install -y -q python3-venv >/dev/null; fi
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,postgresql,redis]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/sidecar serve --config $(CONFIG) $(RUN_ARGS)

system-deps:
	@bash .ci/system-deps

test: system-deps venv
	$(BIN)/python -m pytest $(XDIST) tests $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest $(XDIST) tests/unit $(PYTEST_ARGS)

test-integration: system-deps venv
	$(BIN)/python -m pytest $(XDIST) tests/integration $(PYTEST_ARGS)

test-postfix: system-deps venv
	$(BIN)/python -m pytest $(XDIST) -m postfix tests/integration/postfix $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff format --check sidecar tests bench man
	$(BIN)/ruff check sidecar tests bench man
	$(BIN)/mypy sidecar

# sidecar(8) from the argparse tree, sidecar.toml(5) from docs/configuration.md
# (tests/unit/test_manpages.py fails when they are stale: run this after changing either)
man: venv
	$(BIN)/python man/build.py man

bench: venv
	$(BIN)/python bench/policy_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
