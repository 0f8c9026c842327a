"""Security: stages write only inside the project's output folders, and nothing they load can run
code (a malicious pickle as `model.weights` or as resume state is refused)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from tvs.io import OUTPUT_ROOTS, UnsafePathError, check_output_path
from tvs.resume import STATE, ResumeSpec, load_state

from .conftest import PROJECT
from .stage_runner import last_line, make_project, run_stage, train_cmd

ALLOWED = "models/, metrics/, data/prepared/, reports/, eval/, dvclive/"


@pytest.mark.parametrize(
    "path", ["models/pretrained", "metrics", "metrics/prepare.json", "data/prepared", "eval/scratch", "dvclive/x"]
)
def test_paths_inside_the_output_folders_are_accepted(tmp_path: Path, path: str):
    assert check_output_path(path, "--out", root=tmp_path) == Path(path)
    assert check_output_path(tmp_path / path, "--out", root=tmp_path) == tmp_path / path  # absolute, inside


@pytest.mark.parametrize(
    "path", ["/tmp/elsewhere", "models/../../escape", "../models/x", "data/raw", "src/tvs", ".", "params.yaml"]
)
def test_paths_outside_the_output_folders_are_refused_naming_the_option(tmp_path: Path, path: str):
    with pytest.raises(UnsafePathError) as err:
        check_output_path(path, "--out", root=tmp_path)
    assert str(err.value) == f"--out {path}: outside the project's output folders; stages write only under {ALLOWED}"
    assert ", ".join(f"{top}/" for top in OUTPUT_ROOTS) == ALLOWED


def test_a_symlinked_output_folder_is_the_users_choice_and_accepted(tmp_path: Path):
    (tmp_path / "bigdisk").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "models").symlink_to(tmp_path / "bigdisk")
    assert check_output_path("models/scratch", "--out", root=tmp_path / "project") == Path("models/scratch")


@pytest.mark.parametrize(
    ("stage", "args", "message"),
    [
        ("train.py", ["--arm", "scratch", "--data", "data/prepared", "--out", "../stolen", "--live", "dvclive/s"],
         "train: error: --out ../stolen: outside the project's output folders"),
        ("prepare.py", ["--raw", "data/raw", "--out", "data/prepared", "--summary", "/tmp/x/prepare.json"],
         "prepare: error: --summary /tmp/x/prepare.json: outside the project's output folders"),
        ("evaluate.py", ["--data", "data/prepared", "--pretrained", "models/pretrained", "--scratch", "models/scratch",
                         "--metrics", "metrics", "--eval-dir", "src"],
         "evaluate: error: --eval-dir src: outside the project's output folders"),
    ],
)  # fmt: skip
def test_stages_refuse_output_paths_outside_the_project_before_doing_anything(
    tmp_path: Path, stage: str, args: list[str], message: str
):
    project = tmp_path / "project"
    project.mkdir()
    proc = run_stage(project, [sys.executable, str(PROJECT / "src" / "stages" / stage), *args])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert last_line(proc) == f"{message}; stages write only under {ALLOWED}"
    assert sorted(os.listdir(tmp_path)) == ["project"] and os.listdir(project) == []


class Evil:
    """A pickle that runs code when loaded without weights_only: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_pickle_as_model_weights_stops_the_stage_without_running_it(imagefolder: Path, tmp_path: Path):
    project = make_project(tmp_path / "project", imagefolder, model={"weights": "evil.pth"})
    marker = tmp_path / "pwned"
    torch.save({"conv_stem.weight": Evil(marker)}, project / "evil.pth")
    proc = run_stage(project, train_cmd("pretrained"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert last_line(proc) == (
        "train: error: model.weights: evil.pth: refused or unreadable with weights_only=True "
        "(WeightsUnpickler error: Unsupported global: GLOBAL getattr was not an allowed global by default.)"
    )
    assert not marker.exists()


def test_a_malicious_pickle_as_resume_state_is_ignored_without_running_it(tmp_path: Path, caplog):
    spec = ResumeSpec(tmp_path / "resume", "abc")
    spec.folder.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "fingerprint": "abc", "epoch": Evil(marker)}, spec.folder / STATE)
    with caplog.at_level(logging.WARNING):
        assert load_state(spec) is None
    assert not marker.exists()
    assert any(m.startswith(f"{spec.folder / STATE}: unreadable (") for m in caplog.messages)
