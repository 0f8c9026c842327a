"""The tuning pipeline (tune/dvc.yaml) with real DVC, on a tiny generated ImageFolder.

2 learning rates per arm, 32 px images, one epoch (scratch also two), one repeat, in a temporary
git repository holding the main pipeline and tune/. It runs once for the module and is committed;
the scenarios check that the choice and the final runs are wired as the verdict says, then each
works on its own copy, as a user would: add a learning rate to the grid (only its cells, the choice
and the report run; the final runs only if the choice moved), and rerun with nothing changed
(nothing runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import Reproduced, copy_repo, dvc, ran_stages, reproduce

pytestmark = pytest.mark.e2e

TINY_TUNE = {
    "lrs": [0.003, 0.03],  # 0.003 is the tiny params.yaml's lr: the untuned recipe
    "epochs": 1,
    "scratch_epochs": [1, 2],
    "search_repeat": 0,  # the search's own split, none of the repeats
    "repeats": [1],  # a repeat is a stage per cell; that another seed draws another split: test_data.py
    "image_size": 32,
    "report": {"confidence": 0.95, "resamples": 200, "target_fraction": 0.95},
}
ARMS = ("pretrained", "scratch")


def cells(lrs: list[float], scratch_epochs: list[int], repeats: list[int]) -> set[str]:
    search = {f"{stage}@{lr}" for lr in lrs for stage in ("search_pretrained", "search_scratch", "evaluate_search")}
    final = {f"final_pretrained@{r}" for r in repeats} | {f"prepare@{r}" for r in repeats}
    final |= {
        f"{stage}@{e}-{r}" for e in scratch_epochs for r in repeats for stage in ("final_scratch", "evaluate_final")
    }
    return search | final | {"prepare_search", "choose_lr", "tune_report"}


def meta(tune: Path, run: str) -> dict:
    return json.loads((tune / "models" / run / "meta.json").read_text())


def chosen_by_validation(tune: Path, lrs: list[float]) -> dict[str, float]:
    """Each arm's lr with the best validation accuracy (ties: lower loss, lower lr), read from the runs."""
    runs = {arm: [(lr, meta(tune, f"search/{arm}-{lr}")) for lr in lrs] for arm in ARMS}
    return {arm: min(runs[arm], key=lambda r: (-r[1]["best_val_accuracy"], r[1]["best_val_loss"], r[0]))[0]
            for arm in ARMS}  # fmt: skip


@pytest.fixture(scope="module")
def tune_run(dvc_repo) -> Reproduced:
    """A git + DVC repository with the main pipeline, tune/ and 12 tiny images per class, tune/ run and committed."""
    return reproduce(dvc_repo("tune", per_class=12, tune=TINY_TUNE), "tune", "tuning results")


@pytest.fixture
def repo(tune_run: Reproduced, tmp_path: Path) -> Path:
    """A private copy of ``tune_run``'s repository."""
    return copy_repo(tune_run.root, tmp_path / "repo")


def test_the_pipeline_searches_chooses_on_validation_and_scores_the_choice_over_repeats(tune_run: Reproduced):
    tune, out = tune_run.root / "tune", tune_run.log
    assert ran_stages(out) == cells([0.003, 0.03], [1, 2], [1])
    chosen = chosen_by_validation(tune, [0.003, 0.03])
    for arm in ARMS:
        assert (tune / "selected" / f"{arm}.set").read_text() == f"lr={chosen[arm]}\n"
    # Each final run trained at its arm's chosen lr, with the repeat's seed, on the repeat's own split.
    for r in (1,):
        assert meta(tune, f"final/pretrained-{r}")["params"]["lr"] == chosen["pretrained"]
        for e in (1, 2):
            run = meta(tune, f"final/scratch-{e}-{r}")
            assert (run["params"]["lr"], run["params"]["seed"], len(run["history"])) == (chosen["scratch"], r, e)
    assert (tune / "prepared" / "1" / "manifest.csv").is_file()  # the repeat's own split (prepare@1, seed 1)
    # The search has its own split (prepare_search, seed 0): no final run trains what a search run trained.
    search_split = (tune / "prepared" / "0" / "manifest.csv").read_text()
    assert search_split != (tune / "prepared" / "1" / "manifest.csv").read_text()
    for arm in ARMS:
        assert meta(tune, f"search/{arm}-{chosen[arm]}")["params"]["seed"] == 0
    summary = json.loads((tune / "metrics" / "summary.json").read_text())
    assert summary["pretrained_trials"] == summary["scratch_trials"] == 2
    assert (summary["pretrained_lr"], summary["scratch_lr"]) == (chosen["pretrained"], chosen["scratch"])
    assert summary["repeats"] == 1 and "untuned_survives" in summary
    verdict = (tune / "reports" / "verdict.md").read_text()
    lead = {"pretrained": "**Fine-tune**", "scratch": "**Train from scratch**", "inconclusive": "**Inconclusive**"}
    assert verdict.startswith(f"# Verdict of the tuning pipeline\n\n{lead[summary['recommendation']]}")
    assert "](compute.png)" in verdict and "The untuned recipe (lr 0.003 for both arms" in verdict
    table = pd.read_csv(tune / "reports" / "compute.csv")
    assert len(table) == 4 + 1 * (1 + 2)  # every search run, every final run
    assert table.loc[table["phase"] == "final", "chosen"].all()
    assert (tune / "reports" / "compute.png").read_bytes().startswith(b"\x89PNG")


def stale_stages(tune: Path) -> set[str]:
    """The tuning pipeline's stages `dvc status` reports as changed, without the ``dvc.yaml:`` prefix."""
    return {name.rsplit(":", 1)[-1] for name in json.loads(dvc(tune, "status", "--json", "dvc.yaml"))}


def test_adding_a_learning_rate_runs_its_cells_and_the_choice_and_stales_only_the_moved_arms_final_runs(
    repo: Path,
):
    tune = repo / "tune"
    before = {arm: (tune / "selected" / f"{arm}.set").read_text() for arm in ARMS}
    (tune / "params.yaml").write_text(yaml.safe_dump({**TINY_TUNE, "lrs": [0.003, 0.03, 0.01]}, sort_keys=False))
    new = {f"{stage}@0.01" for stage in ("search_pretrained", "search_scratch", "evaluate_search")}
    trained = {f"search_{arm}@0.01" for arm in ARMS}  # evaluate_search@0.01 reads what they will write
    assert (
        trained | {"choose_lr", "tune_report"} <= stale_stages(tune) <= new | {"choose_lr", "tune_report"}
    )  # no cell of before
    assert ran_stages(dvc(tune, "repro", "choose_lr")) == trained | {"choose_lr"}  # the choice reads the runs' meta
    moved = {arm for arm in ARMS if (tune / "selected" / f"{arm}.set").read_text() != before[arm]}
    finals = {"final_pretrained@1"} if "pretrained" in moved else set()
    finals |= {f"final_scratch@{e}-1" for e in (1, 2)} if "scratch" in moved else set()
    stale = stale_stages(tune)
    assert {s for s in stale if s.startswith("final_")} == finals  # only an arm whose choice moved trains again
    assert {"evaluate_search@0.01", "tune_report"} <= stale
    if not moved:  # then the new cell's scoring and the report are all that is left, and it counts the new trial
        assert ran_stages(dvc(tune, "repro")) == {"evaluate_search@0.01", "tune_report"}
        assert json.loads((tune / "metrics" / "summary.json").read_text())["scratch_trials"] == 3


def test_nothing_changed_nothing_runs(repo: Path):
    assert ran_stages(dvc(repo / "tune", "repro")) == set()  # a real no-op `dvc repro`: seconds
