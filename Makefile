# The two commands a fresh clone needs: `make repro` (whole pipeline, offline) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stages run `python` and `dvc` from the project's environment; nothing phones home.
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup data repro test lint format clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The embedded default dataset (ELPV from PyPI), exported byte-for-byte; data/raw.dvc pins its hash.
data/raw: | $(STAMP)
	$(BIN)/python -m tvs.elpv data/raw
	$(BIN)/dvc commit --force --quiet data/raw.dvc

data: data/raw

repro: $(STAMP) data/raw
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

lint: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf data/prepared models dvclive eval .pytest_cache
