# The one entry point. Every target installs what it needs first (a virtual environment in .venv,
# the CDK CLI in node_modules), so a fresh clone needs nothing but Python 3.11+, Node.js and npm.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# jsii (under aws-cdk-lib) prints a full-screen banner on every run under Node.js 20, which it no
# longer supports; the machines have Node.js 20 and synth and the template tests pass on it, so the
# banner is silenced for that one major version (a newer Node.js needs nothing).
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: help demo serve test unit integration coverage browser cli lint format typecheck synth openapi bench prices clean

help:
	@echo "make demo      run the demo on the embedded local runtime (no AWS account, no Docker)"
	@echo "make serve     API on http://127.0.0.1:$${API_PORT:-8080}, emulated AWS on http://127.0.0.1:$${AWS_PORT:-5000}"
	@echo "make test      lint, type-check and the whole test suite"
	@echo "make coverage  both suites with line and branch coverage, reported per file"
	@echo "make cli       install the command-line client as .venv/bin/cost-engine"
	@echo "make synth     synthesize the CDK stack (offline) into cdk.out/"
	@echo "make openapi   write the API's OpenAPI document (generated from the handler) to openapi.json"
	@echo "make format    format the code with ruff"
	@echo "make prices    refresh the price catalog from the AWS Price List API (needs AWS credentials)"
	@echo "make bench     cost and speed per execution, imports and API latency, against the targets"

$(VENV_STAMP): requirements-bootstrap.txt requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-bootstrap.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.txt
	touch $@

# The approval-page tests open the emailed link in a real headless Chromium: Debian's chromium and
# chromium-driver (test tools' own browser downloads do not work offline). Installed once, as root
# or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "Installing Debian's chromium and chromium-driver for the browser tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; }

# The CLI, as a command in the virtual environment: `.venv/bin/cost-engine --help` (or put .venv/bin on
# PATH). It runs this checkout's code.
CLI := $(VENV)/bin/cost-engine
$(CLI): $(VENV_STAMP) Makefile
	printf '#!/bin/sh\n# The Cost Execution Engine CLI (written by make).\nPYTHONPATH="%s$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s" -m cli "$$@"\n' \
		"$(CURDIR)" "$(CURDIR)/$(PY)" > $@
	chmod +x $@

cli: $(CLI)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(VENV_STAMP) $(CLI)
	$(PY) -m local_runtime demo

serve: $(VENV_STAMP)
	$(PY) -m local_runtime serve

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(VENV_STAMP)
	$(VENV)/bin/mypy

# The unit suite, then the integration suite, each on $(WORKERS) processes (pytest-xdist; one per
# core here), whole files to a worker so that a module's set-up is made once; each integration worker
# starts its own local runtime. Two runs, not one: the unit tests use moto in-process (mock_aws),
# which would reset the emulator that an integration worker's runtime serves.
WORKERS ?= 2
test: lint typecheck browser $(CLI) $(NODE_STAMP)
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration

unit: $(VENV_STAMP) $(NODE_STAMP)
	$(PY) -m pytest -n $(WORKERS) --dist loadfile tests/unit tests/statemachines tests/infrastructure

integration: $(VENV_STAMP) browser $(CLI)
	$(PY) -m pytest -n $(WORKERS) --dist loadfile tests/integration

# The same two suites, the same way, with line and branch coverage (configured in pyproject.toml: the
# shared package, the functions, the local runtime and the stack), each into its own data file (and
# the processes the tests start into theirs), then combined and reported per file (and coverage.json).
coverage: lint typecheck browser $(CLI) $(NODE_STAMP)
	rm -f .coverage .coverage.*
	COVERAGE_FILE=.coverage.unit $(PY) -m pytest -n $(WORKERS) --dist loadfile --cov --cov-report= \
		tests/unit tests/statemachines tests/infrastructure
	COVERAGE_FILE=.coverage.integration $(PY) -m pytest -n $(WORKERS) --dist loadfile --cov --cov-report= \
		tests/integration
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report --skip-covered --sort=cover
	$(VENV)/bin/coverage json -q -o coverage.json

synth: $(VENV_STAMP) $(NODE_STAMP)
	CDK_DISABLE_CLI_TELEMETRY=true npx --no-install cdk synth --quiet --no-notices --no-version-reporting

openapi: $(VENV_STAMP)
	$(PY) -m tools.write_openapi

# Needs AWS credentials that may call the Price List API (pricing:GetProducts).
prices: $(VENV_STAMP)
	$(PY) -m tools.refresh_prices

# One table (and benchmarks/results.json): import times, what each type's execution costs on AWS
# (transitions, invocations, DynamoDB requests and units, dollars), the waits its definition would
# have, a batch at once, and the API's latency; each figure beside its target (exit 1 if one is missed).
bench: $(VENV_STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* coverage.json
