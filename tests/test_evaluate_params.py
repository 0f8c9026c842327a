"""`evaluate`'s statistics are params like any other: `dvc exp run -S` and `dvc exp show` see them, a
change reruns only the comparison (not training), and going back to a setting already run is restored
from DVC's run-cache instead of scoring both checkpoints again.

Each test starts from its own copy of the reproduced tiny repository (``evaluate.resamples: 200``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import REPRODUCED_PARAMS, Reproduced, dvc, ran_stages

pytestmark = pytest.mark.e2e

CACHED = "Stage 'evaluate' is cached - skipping run, checking out outputs"


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def set_param(repo: Path, key: str, value: float) -> None:
    """Edit ``params.yaml`` by hand, as a user would before `dvc repro`."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    section, name = key.split(".")
    params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_the_reproduced_repository_scored_with_its_resamples(reproduced: Reproduced):
    resamples = REPRODUCED_PARAMS["evaluate"]["resamples"]
    assert read(reproduced.root, "comparison")["significance"]["bootstrap_resamples"] == resamples


def test_exp_run_with_new_resamples_reruns_only_evaluate_and_its_verdict(tiny_repo: Path):
    out = dvc(tiny_repo, "exp", "run", "-S", "evaluate.resamples=300")
    assert ran_stages(out) == {"check_params", "evaluate", "verdict"}  # check_params: any edit of params.yaml
    assert read(tiny_repo, "comparison")["significance"]["bootstrap_resamples"] == 300
    shown = dvc(tiny_repo, "exp", "show", "--csv")
    header = shown.splitlines()[0].split(",")
    assert {"evaluate.confidence", "evaluate.resamples", "evaluate.target_fraction"} <= set(header)


def test_a_new_confidence_reruns_evaluate_and_switching_back_restores_it_from_the_run_cache(tiny_repo: Path):
    before = read(tiny_repo, "pretrained")
    committed = (tiny_repo / "metrics" / "comparison.json").read_text()
    set_param(tiny_repo, "evaluate.confidence", 0.9)
    assert json.loads(dvc(tiny_repo, "status", "--json")).keys() == {"check_params", "evaluate", "verdict"}
    out = dvc(tiny_repo, "repro")
    assert ran_stages(out) == {"check_params", "evaluate", "verdict"} and CACHED not in out
    after = read(tiny_repo, "pretrained")
    assert read(tiny_repo, "comparison")["significance"]["confidence"] == 0.9
    assert after["accuracy"] == before["accuracy"]
    assert (
        before["accuracy_ci_low"] < after["accuracy_ci_low"] <= after["accuracy_ci_high"] < before["accuracy_ci_high"]
    )
    assert "(90% CI " in (tiny_repo / "reports" / "verdict.md").read_text()

    shutil.rmtree(tiny_repo / "eval")  # the run-cache, not the workspace, brings it back
    set_param(tiny_repo, "evaluate.confidence", 0.95)  # back to the committed setting
    out = dvc(tiny_repo, "repro")
    assert CACHED in out
    assert ran_stages(out) == {"check_params", "verdict"}  # no outputs / a Markdown output: no run-cache
    assert (tiny_repo / "metrics" / "comparison.json").read_text() == committed  # byte for byte
    assert "(95% CI " in (tiny_repo / "reports" / "verdict.md").read_text()
    assert (tiny_repo / "eval" / "pretrained" / "predictions.csv").is_file()  # the cached folder came back too
