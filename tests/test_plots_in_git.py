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

from .conftest import PROJECT, Reproduced, run_ok

ARMS = ("pretrained", "scratch")


def top_level_plots(dvc_yaml: Path = PROJECT / "dvc.yaml") -> list[dict]:
    return yaml.safe_load(dvc_yaml.read_text())["plots"]


def plot_files(plots: list[dict]) -> set[str]:
    """Every file the top-level plot definitions read."""
    files = set()
    for entry in plots:
        (name, props), = entry.items()  # fmt: skip
        files |= set(props["y"]) if isinstance(props.get("y"), dict) else {name}
    return files


# The unit tests of the sources themselves (curves.csv, confusion cells, diagnostics): test_diagnostics.py.


# --- the project's dvc.yaml and .gitignore files ----------------------------------------------


def test_top_level_plots_read_only_the_verdict_stages_uncached_outputs():
    verdict = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["verdict"]
    outs = {next(iter(o)): o[next(iter(o))] for o in verdict["outs"] if isinstance(o, dict)}
    assert outs["reports/plots"] == {"cache": False}
    files = plot_files(top_level_plots())
    assert files == {"reports/plots/curves.csv", "reports/plots/calibration.csv", "reports/plots/roc.csv",
                     "reports/plots/pr.csv", *(f"reports/plots/{arm}/confusion.json" for arm in ARMS)}  # fmt: skip


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
    assert {"actual", "predicted", "count", "share"} <= confusion[0].keys()
    assert sum(int(row["count"]) for row in confusion) == test_images
    classes = {row["actual"] for row in confusion}
    assert {(row["actual"], row["predicted"]) for row in confusion} >= {(a, p) for a in classes for p in classes}
    curves = rows_by_plot(shown)["Validation accuracy by epoch"]
    assert {row["arm"] for row in curves} == set(ARMS)  # the legend names the arms, not files

    diffed = plots_json(clone, "diff", "HEAD")
    assert not diffed.get("errors"), diffed["errors"]
    assert missing_data(diffed, {"HEAD", "workspace"}) == []
