"""`dvc plots show` and `dvc plots diff` work in any clone: the sources of the top-level plots are small
files the `verdict` stage keeps in git (reports/plots/<arm>/), not cached outputs a clone without a
remote lacks (dvclive/<arm>/, eval/<arm>/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tvs.errors import DataError
from tvs.verdict.curves import CONFUSION, CURVES, confusion_rows, curve_tsv, read_predictions, write_plot_sources

from .conftest import PROJECT, Reproduced, run_ok

ARMS = ("pretrained", "scratch")
HISTORY = [
    {"epoch": 1, "train_loss": 0.7, "train_accuracy": 0.5, "val_loss": 0.6, "val_accuracy": 0.625, "lr": 1e-3,
     "epoch_seconds": 2.5, "elapsed_seconds": 2.75},
    {"epoch": 2, "train_loss": 0.4, "train_accuracy": 0.75, "val_loss": 0.5, "val_accuracy": 0.875, "lr": 5e-4,
     "epoch_seconds": 2.0, "elapsed_seconds": 4.75},
]  # fmt: skip


def top_level_plots(dvc_yaml: Path = PROJECT / "dvc.yaml") -> list[dict]:
    return yaml.safe_load(dvc_yaml.read_text())["plots"]


def plot_files(plots: list[dict]) -> set[str]:
    """Every file the top-level plot definitions read."""
    files = set()
    for entry in plots:
        (name, props), = entry.items()  # fmt: skip
        files |= set(props["y"]) if isinstance(props.get("y"), dict) else {name}
    return files


# --- unit: history and predictions -> plot sources -------------------------------------------


def test_a_curve_is_one_row_per_epoch_numbered_as_the_metrics_number_epochs():
    assert curve_tsv(HISTORY, "val_accuracy") == "epoch\tval_accuracy\n1\t0.625\n2\t0.875\n"
    assert curve_tsv(HISTORY, "lr") == "epoch\tlr\n1\t0.001\n2\t0.0005\n"


def test_an_arm_with_no_completed_epoch_gets_a_curve_with_the_header_only():
    assert curve_tsv([], "train_loss") == "epoch\ttrain_loss\n"


def test_the_confusion_is_one_actual_predicted_row_per_test_image():
    rows = confusion_rows(["cats", "dogs", "dogs"], ["cats", "cats", "dogs"])
    assert rows == [
        {"actual": "cats", "predicted": "cats"},
        {"actual": "dogs", "predicted": "cats"},
        {"actual": "dogs", "predicted": "dogs"},
    ]
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        confusion_rows(["cats", "dogs", "dogs"], ["cats", "dogs"])


def test_predictions_without_the_label_columns_are_refused_naming_the_file(tmp_path: Path):
    path = tmp_path / "predictions.csv"
    path.write_text("path,label\na.png,cats\n")
    with pytest.raises(DataError, match=r"predictions\.csv: needs the columns `true` and `predicted`"):
        read_predictions(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: no such file; run `evaluate` first"):
        read_predictions(tmp_path / "missing.csv")


def test_the_plot_sources_are_every_file_the_top_level_plots_read(tmp_path: Path):
    for arm in ARMS:
        (tmp_path / "eval" / arm).mkdir(parents=True)
        (tmp_path / "eval" / arm / "predictions.csv").write_text("path,true,predicted\na.png,cats,dogs\n")
    write_plot_sources(tmp_path / "reports" / "plots", {arm: HISTORY for arm in ARMS}, tmp_path / "eval")
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("reports/plots/**/*") if p.is_file()}
    assert written == plot_files(top_level_plots())
    confusion = json.loads((tmp_path / "reports" / "plots" / "scratch" / CONFUSION).read_text())
    assert confusion == [{"actual": "cats", "predicted": "dogs"}]


# --- the project's dvc.yaml and .gitignore files ----------------------------------------------


def test_top_level_plots_read_only_the_verdict_stages_uncached_outputs():
    verdict = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["verdict"]
    outs = {next(iter(o)): o[next(iter(o))] for o in verdict["outs"] if isinstance(o, dict)}
    assert outs["reports/plots"] == {"cache": False}
    files = plot_files(top_level_plots())
    assert len(files) == len(ARMS) * (len(CURVES) + 1)
    assert all(f.startswith("reports/plots/") for f in files)


def test_no_gitignore_hides_the_plot_sources():
    paths = sorted(plot_files(top_level_plots()))
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == "", f"git-ignored: {proc.stdout}"  # 1: none is ignored


# --- end to end: a fresh clone with no DVC cache ----------------------------------------------


def plots_json(cwd: Path, *args: str) -> dict:
    """``dvc plots <args> --json`` (no HTML page: the clone has no generated template, and needs none)."""
    return json.loads(run_ok([sys.executable, "-m", "dvc", "plots", *args, "--json"], cwd))


def rows_by_plot(shown: dict) -> dict[str, list[dict]]:
    """Each drawn Vega plot's data rows (``rev``, ``filename`` and the plotted fields), by plot id."""
    return {
        name: [row for r in renderers if r["type"] == "vega" for row in r["content"]["data"]["values"]]
        for name, renderers in shown["data"].items()
    }


def missing_data(shown: dict, revisions: set[str]) -> list[str]:
    """The top-level plots, or their files, with no data rows for one of ``revisions``."""
    rows, missing = rows_by_plot(shown), []
    for entry in top_level_plots():
        (name, props), = entry.items()  # fmt: skip
        files = props["y"] if isinstance(props.get("y"), dict) else {name: None}
        for path in files:
            for rev in revisions:
                # an overlaid file is named by the part that differs (pretrained/lr.tsv); a lone one is not
                if not any(r["rev"] == rev and path.endswith(r.get("filename", path)) for r in rows.get(name, [])):
                    missing.append(f"{name}: {path} @ {rev}")
    return missing


@pytest.mark.e2e
def test_a_fresh_clone_without_cache_shows_and_diffs_every_plot(reproduced: Reproduced, tmp_path: Path):
    clone = tmp_path / "clone"  # of the reproduced repository, whose results are committed
    run_ok(["git", "clone", "-q", str(reproduced.root), str(clone)], tmp_path)
    assert not (clone / "dvclive").exists() and not (clone / "eval" / "scratch").exists()  # nothing cached came

    shown = plots_json(clone, "show")
    assert not shown.get("errors"), shown["errors"]
    assert missing_data(shown, {"workspace"}) == []
    confusion = rows_by_plot(shown)["reports/plots/scratch/confusion.json"]
    test_images = json.loads((clone / "metrics" / "scratch.json").read_text())["test_images"]
    assert {"actual", "predicted"} <= confusion[0].keys() and len(confusion) == test_images

    diffed = plots_json(clone, "diff", "HEAD")
    assert not diffed.get("errors"), diffed["errors"]
    assert missing_data(diffed, {"HEAD", "workspace"}) == []
