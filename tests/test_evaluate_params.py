"""`evaluate`'s statistics are params like any other: `dvc exp run -S` and `dvc exp show` see them, a
change reruns only the comparison (not training), and going back to a setting already run is restored
from DVC's run-cache instead of scoring both checkpoints again.

One repository for the module; the scenarios run in order, each from the state the previous left.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .conftest import dvc, ran_stages

pytestmark = pytest.mark.e2e

CACHED = "Stage 'evaluate' is cached - skipping run, checking out outputs"
SEEN: dict[str, str] = {}  # comparison.json as test 1 left it


@pytest.fixture(scope="module")
def repo(dvc_repo) -> Path:
    root = dvc_repo("evaluate-params", evaluate={"resamples": 200})
    assert ran_stages(dvc(root, "repro")) == {"prepare", "train_pretrained", "train_scratch", "evaluate", "verdict"}
    return root


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def set_param(repo: Path, key: str, value: float) -> None:
    """Edit ``params.yaml`` by hand, as a user would before `dvc repro`."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    section, name = key.split(".")
    params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_1_exp_run_with_new_resamples_reruns_only_evaluate_and_its_verdict(repo: Path):
    out = dvc(repo, "exp", "run", "-S", "evaluate.resamples=300")
    assert ran_stages(out) == {"evaluate", "verdict"}
    assert read(repo, "comparison")["significance"]["bootstrap_resamples"] == 300
    SEEN["comparison"] = (repo / "metrics" / "comparison.json").read_text()
    shown = dvc(repo, "exp", "show", "--csv")
    header = shown.splitlines()[0].split(",")
    assert {"evaluate.confidence", "evaluate.resamples", "evaluate.target_fraction"} <= set(header)


def test_2_a_new_confidence_in_params_yaml_reruns_evaluate_and_shows_in_metrics_and_verdict(repo: Path):
    before = read(repo, "pretrained")
    set_param(repo, "evaluate.confidence", 0.9)
    assert json.loads(dvc(repo, "status", "--json")).keys() == {"evaluate", "verdict"}
    out = dvc(repo, "repro")
    assert ran_stages(out) == {"evaluate", "verdict"} and CACHED not in out
    after = read(repo, "pretrained")
    assert read(repo, "comparison")["significance"]["confidence"] == 0.9
    assert after["accuracy"] == before["accuracy"]
    assert (
        before["accuracy_ci_low"] < after["accuracy_ci_low"] <= after["accuracy_ci_high"] < before["accuracy_ci_high"]
    )
    assert "(90% CI " in (repo / "reports" / "verdict.md").read_text()


def test_3_switching_back_restores_evaluate_from_the_run_cache(repo: Path):
    set_param(repo, "evaluate.confidence", 0.95)  # back to test 1's setting (resamples 300)
    out = dvc(repo, "repro")
    assert CACHED in out
    assert ran_stages(out) == {"verdict"}  # the Markdown verdict is cheap and kept out of the run-cache
    assert (repo / "metrics" / "comparison.json").read_text() == SEEN["comparison"]  # test 1's, byte for byte
    assert "(95% CI " in (repo / "reports" / "verdict.md").read_text()
    assert (repo / "eval" / "pretrained" / "predictions.csv").is_file()  # the cached folder came back too
