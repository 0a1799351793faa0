# One entry point for people and CI. `make synth` and `make test` install whatever is missing first.
# VENV can point at another virtual environment (e.g. one where detectron2 was built from source).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# jsii prints an end-of-life banner for Node 20 on every call; the CDK still supports it.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PATH := $(abspath $(VENV))/bin:$(PATH)
CDK := npx --no-install cdk

.PHONY: install synth test test-infra test-container lint-templates serve clean

install: $(VENV)/.installed node_modules/.package-lock.json

$(VENV)/.installed: requirements.txt requirements-dev.txt container/requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

synth: install
	$(CDK) synth --quiet

test: install
	$(PYTHON) -m pytest

test-infra: install
	$(PYTHON) -m pytest tests/infra

test-container: install
	$(PYTHON) -m pytest tests/container

clean:
	rm -rf cdk.out .pytest_cache
