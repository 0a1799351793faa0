# One entry point for people and CI. `make synth` and `make test` install whatever is missing first.
# VENV can point at another virtual environment (e.g. one where detectron2 was built from source).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# checkov pins a boto3 that cannot share $(VENV) with moto's: it gets a virtual environment of its own.
CHECKOV_VENV ?= .venv-checkov
PIP := $(PYTHON) -m pip
export PATH := $(abspath $(VENV))/bin:$(PATH)
CDK := npx --no-install cdk

.PHONY: install install-synth synth lint test test-infra test-container bench lint-templates clean

# Everything the tests need (torch, the serving package's dependencies, the test tools).
install: $(VENV)/.installed $(CHECKOV_VENV)/.installed node_modules/.package-lock.json

# Only what synthesis needs: the CDK app's requirements and the CDK CLI.
install-synth: $(VENV)/.installed-synth node_modules/.package-lock.json

# pip -qq: errors only (pip configs that list missing index folders warn once per package).
# The app itself is a package (pyproject.toml): installed editable, so app.py and the tests import
# `stacks` and `sagemaker_constructs` from this tree without any sys.path patch.
$(VENV)/.installed-synth: requirements.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq -r requirements.txt
	$(PIP) install -qq -e .
	touch $@

# requirements-dev.txt includes requirements.txt, so a full install also satisfies synth.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-docs.txt container/requirements.txt client/requirements.txt client/pyproject.toml pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq -r requirements-dev.txt
	$(PIP) install -qq -e .
	$(PIP) install -qq -e client
	touch $@ $(VENV)/.installed-synth

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -qq --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -qq -r requirements-checkov.txt
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

synth: install-synth
	$(CDK) synth --quiet

# Style, lint and types, with zero findings (configured in pyproject.toml); pre-commit runs the same.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(PYTHON) -m pytest

# The CDK side alone: nothing here needs torch (tests marked needs_torch are deselected).
test-infra: install
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(PYTHON) -m pytest tests/infra -m "not needs_torch"

test-container: install
	$(PYTHON) -m pytest tests/container

# Markdown tables from one run, for each backend installed (README "Performance"); BENCH_ARGS=--help.
bench: $(VENV)/.installed
	PYTHONPATH=container $(PYTHON) -m bench $(BENCH_ARGS)

# cfn-lint over what `make synth` wrote (the tests do the same on their own synth).
lint-templates: install synth
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

# CDK diff per stack between BASE (default: the merge base with main) and this tree, both synthesized
# here with the same CLI and context; no AWS. FAIL_ON_DESTRUCTIVE=1: exit non-zero when a stateful
# resource would be replaced or destroyed. CONTEXT="env=dev": context for both synths.
BASE ?= $(shell git merge-base HEAD main 2>/dev/null || echo main)
.PHONY: diff
diff: install-synth
	$(PYTHON) scripts/cdk_diff.py --base $(BASE) $(if $(FAIL_ON_DESTRUCTIVE),--fail-on-destructive) \
		$(foreach pair,$(CONTEXT),--context $(pair)) $(if $(MARKDOWN_DIR),--markdown-dir $(MARKDOWN_DIR))

# The documentation site: regenerate the pages built from the code, then a strict build into site/
# (a dead link or a page missing from the nav fails). `make test` runs the same build (tests/docs).
.PHONY: docs docs-serve
docs: $(VENV)/.installed
	PYTHONPATH=container $(PYTHON) scripts/generate_docs.py
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf cdk.out .pytest_cache site
