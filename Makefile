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

.PHONY: setup data repro test test-slow lint format deps clean bench bench-quick audit

PLOTS_PAGE := .dvc/plots_template.html

setup: $(STAMP) $(PLOTS_PAGE)

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# `dvc plots show`'s page with Vega inline, so that it draws offline (.dvc/config names it).
$(PLOTS_PAGE): | $(STAMP)
	$(BIN)/python -m tvs.plots_page $@

# The embedded default dataset (ELPV from PyPI), exported byte-for-byte by data/dvc.yaml's stage,
# whose lock pins its hash; `dvc repro` runs that stage too, so `make repro` needs no `make data`.
data/raw: | $(STAMP)
	$(BIN)/dvc repro data/dvc.yaml

data: data/raw

repro: $(STAMP) $(PLOTS_PAGE)
	$(BIN)/dvc repro dvc.yaml
	$(BIN)/python -m tvs.page

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

# Everything but the benchmarks' own checks (`make bench-quick`) and the slow grids (`make test-slow`, 10 to 15 min);
# `pytest -m "not e2e"` is the quick unit suite.
test: lint $(PLOTS_PAGE)
	$(BIN)/python -m pytest -m "not bench and not slow" -n 2 --dist loadscope --no-loadscope-reorder --random-order

# The answer page's next steps run at the grids' committed size on tiny own data (tests/test_page_commands.py).
test-slow: $(STAMP) $(PLOTS_PAGE)
	$(BIN)/python -m pytest -m slow

# After changing an import: each stage's code deps in the four dvc.yaml files, written from what its
# script imports (the 8 training stages share one list; tests/test_dvc_deps.py fails until they agree).
deps: $(STAMP)
	$(BIN)/python -m tvs.declare

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Benchmarks (docs/performance.md): the full CPU suite on the default dataset (~9 min on 2 cores),
# and a smoke run on tiny generated data; then `python -m benchmarks.report` writes the page.
bench: $(STAMP) data/raw
	$(BIN)/python -m benchmarks.run --out benchmarks/results/cpu.json

bench-quick: $(STAMP)
	$(BIN)/python -m pytest -m bench
	$(BIN)/python -m benchmarks.run --quick --out benchmarks/results/quick.json

# Known vulnerabilities in the pinned dependencies, from PyPI's advisory data (needs the network).
# It reports and never fails the build: findings, or packages it could not look up, are summed up
# on the last line and it exits 0 (see docs/reliability.md).
audit: $(STAMP)
	$(BIN)/pip-audit --requirement requirements.lock --no-deps --disable-pip --progress-spinner off 2>&1 \
		| tee $(VENV)/audit.log || true
	@found=$$(grep -Eo "(Found [0-9]+ known vulnerabilit[a-z]+ in [0-9]+ packages?|No known vulnerabilities found)" \
	          $(VENV)/audit.log || echo "did not complete (offline? see the error above)"); \
	 missed=$$(grep -c "could not be audited" $(VENV)/audit.log || true); \
	 echo "audit: $$found; $$missed of $$(grep -c "==" requirements.lock) pinned packages could not be" \
	      "looked up (offline, or a version PyPI does not serve); reported, not failed"

clean:
	rm -rf data/prepared models dvclive eval .pytest_cache
