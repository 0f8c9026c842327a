"""The README's commands, literally, in a fresh shell: no venv on PATH, no PYTHONPATH, nothing the
test suite's own environment provides. A green suite once hid that the README's own-data commands
failed with ``No module named 'tvs'``."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import PIPELINE_FILES, PROJECT, bash_block, fresh_shell, run_ok, write_imagefolder, write_params

pytestmark = pytest.mark.e2e


def readme_block(heading: str, first_line: str) -> str:
    return bash_block(PROJECT / "README.md", heading, first_line)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh checkout of the project, with tiny params, after the set-up (the venv, the plots page)."""
    root = tmp_path / "project"
    files = (*PIPELINE_FILES, "README.md", "data/dvc.yaml", "data/dvc.lock", "data/.gitignore", "dvc.lock", "Makefile",
             "requirements.lock", "pyproject.toml", "study/dvc.yaml", "study/params.yaml", "tune/dvc.yaml",
             "tune/params.yaml")  # fmt: skip
    for rel in files:
        if (PROJECT / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / rel, root / rel)  # times kept: make sees the set-up as done
    for results in ("metrics", "reports", "evidence"):  # the default dataset's committed results, as in a clone
        shutil.copytree(PROJECT / results, root / results)
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root / "params.yaml", train={"batch_size": 2})  # data.train_fraction=0.1 leaves 2 images
    (root / ".venv").symlink_to(PROJECT / ".venv")  # what `make setup` made, without installing it again
    setup = "git init -q -b main && .venv/bin/python -m tvs.plots_page .dvc/plots_template.html"
    setup += " && git add -A && git commit -qm clone"
    assert fresh_shell(setup, root).returncode == 0
    return root


def test_the_readmes_own_data_and_experiment_commands_work_as_written_in_a_fresh_shell(clone: Path, tmp_path: Path):
    images = write_imagefolder(tmp_path / "my_images", {"cats": 10, "dogs": 10})
    own_data = readme_block("## Bringing your own data", "source .venv/bin/activate")
    assert "/path/to/my_images" in own_data
    done = fresh_shell(own_data.replace("/path/to/my_images", str(images)), clone)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (clone / "metrics" / "comparison.json").is_file()
    # `main` now holds the results on the user's data: what later diffs compare with (20 images, not ELPV's).
    committed = run_ok(["git", "show", "main:metrics/prepare.json"], clone)
    assert json.loads(committed)["images"] == 20
    assert json.loads(run_ok([sys.executable, "-m", "dvc", "metrics", "diff", "main", "--json"], clone)) == {}
    # The page is about the user's data only: ELPV's study and tuning evidence is listed as stale, never current.
    page = (clone / "reports" / "answer.md").read_text()
    assert "Governed by rung c" in page, page
    assert page.count("stale: other data") == 2 and "functional" not in page and "defective" not in page
    # The commands the page names as the next rungs, on this project as DVC sees it: `dvc status` lists what
    # each would run (run here they would take 10 minutes: tests/test_page_commands.py runs them, `make test-slow`),
    # exactly the training runs the page counts.
    named = re.findall(r"`dvc repro (\w+/dvc\.yaml)`[^|]*?\((\d+) training runs", page)
    assert sorted(pipeline for pipeline, _ in named) == ["study/dvc.yaml", "tune/dvc.yaml"], page
    for pipeline, runs in named:
        status = fresh_shell(f"source .venv/bin/activate\ndvc status --json {pipeline}", clone)
        assert status.returncode == 0, status.stderr
        training = [s for s in json.loads(status.stdout) if re.search(r"(train|search|final)_(pretrained|scratch)@", s)]
        assert len(training) == int(runs), (pipeline, runs, sorted(training))

    # Every line of the block but two of its three `dvc exp run`s (each retrains; one shows the way).
    experiments = readme_block("## Experiments and pull requests", "source .venv/bin/activate").splitlines()
    lines = [line for line in experiments if not line.startswith(("dvc exp run -S lr=", "dvc exp run -S data."))]
    assert len(lines) == len(experiments) - 2 and any(line.startswith("dvc exp run") for line in lines)
    done = fresh_shell("\n".join(lines), clone)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No module named" not in done.stderr
    assert "| Path" in done.stdout  # the Markdown table of `dvc metrics diff main --md`
    assert (clone / "dvc_plots" / "index.html").is_file()  # `dvc plots show`
