"""Security: stages write only inside the project's output folders, and nothing they load can run
code (a malicious pickle as `model.weights` or as resume state is refused)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tvs.errors import UnsafePathError
from tvs.io import check_output_path, output_roots

from .conftest import PROJECT
from .stage_runner import empty_project, make_project, one_line_error, run_stage, stage_cmd, train_cmd

# Where the project's dvc.yaml declares outputs: the only places its stages may write.
ALLOWED = (
    "data/prepared/, dvclive/pretrained/, dvclive/scratch/, eval/, metrics/, models/pretrained/, models/scratch/, "
    "reports/, reports/plots/"
)


def test_the_output_folders_are_read_from_the_dvc_yaml_of_the_stage(tmp_path: Path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    outs: [data/prepared, {reports/verdict.md: {cache: false}}]\n"
        "    metrics: [{metrics/a.json: {cache: false}}]\n"
        "  b:\n    matrix: {seed: [1, 2]}\n    cmd: x\n    outs: ['models/${item.seed}-scratch']\n"
    )
    assert output_roots(tmp_path / "dvc.yaml") == ("data/prepared", "metrics", "models", "reports")
    assert output_roots(PROJECT / "study" / "dvc.yaml") == (
        "dvclive", "eval", "metrics", "models", "prepared", "reports", "splits"
    )  # fmt: skip
    assert ", ".join(f"{root}/" for root in output_roots(PROJECT / "dvc.yaml")) == ALLOWED


@pytest.mark.parametrize(
    "path",
    ["models/pretrained", "metrics", "metrics/prepare.json", "data/prepared", "eval/scratch", "dvclive/scratch",
     "reports/verdict.md"],
)  # fmt: skip
def test_paths_inside_the_output_folders_are_accepted(tmp_path: Path, path: str):
    empty_project(tmp_path)
    assert check_output_path(path, "--out", root=tmp_path) == Path(path)
    assert check_output_path(tmp_path / path, "--out", root=tmp_path) == tmp_path / path  # absolute, inside


@pytest.mark.parametrize(
    "path",
    ["/tmp/elsewhere", "models/../../escape", "../models/x", "data/raw", "data", "src/tvs", ".", "params.yaml",
     "models/other", "dvclive"],
)  # fmt: skip
def test_paths_outside_the_output_folders_are_refused_naming_the_option(tmp_path: Path, path: str):
    empty_project(tmp_path)
    with pytest.raises(UnsafePathError) as err:
        check_output_path(path, "--out", root=tmp_path)
    assert str(err.value) == f"--out {path}: outside the project's output folders; stages write only under {ALLOWED}"


def test_a_symlinked_output_folder_is_the_users_choice_and_accepted(tmp_path: Path):
    (tmp_path / "bigdisk").mkdir()
    empty_project(tmp_path / "project")
    (tmp_path / "project" / "models").symlink_to(tmp_path / "bigdisk")
    assert check_output_path("models/scratch", "--out", root=tmp_path / "project") == Path("models/scratch")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("stage", "args", "message"),
    [
        ("train", ["--arm", "scratch", "--data", "data/prepared", "--out", "../stolen", "--live", "dvclive/scratch"],
         "train: error: --out ../stolen: outside the project's output folders"),
        ("prepare", ["--raw", "data/raw", "--out", "data/prepared", "--summary", "/tmp/x/prepare.json"],
         "prepare: error: --summary /tmp/x/prepare.json: outside the project's output folders"),
        ("evaluate", ["--data", "data/prepared", "--pretrained", "models/pretrained", "--scratch", "models/scratch",
                      "--metrics", "metrics", "--eval-dir", "src"],
         "evaluate: error: --eval-dir src: outside the project's output folders"),
    ],
)  # fmt: skip
def test_stages_refuse_output_paths_outside_the_project_before_doing_anything(
    tmp_path: Path, stage: str, args: list[str], message: str
):
    project = empty_project(tmp_path / "project")
    proc = run_stage(project, stage_cmd(stage, *args))
    assert one_line_error(proc) == f"{message}; stages write only under {ALLOWED}"
    assert sorted(os.listdir(tmp_path)) == ["project"] and os.listdir(project) == ["dvc.yaml"]


@pytest.mark.e2e
def test_a_stage_run_outside_a_dvc_project_is_refused_before_doing_anything(tmp_path: Path):
    (tmp_path / "project").mkdir()
    proc = run_stage(tmp_path / "project", train_cmd("scratch"))
    assert one_line_error(proc) == (
        f"train: error: {tmp_path / 'project' / 'dvc.yaml'}: not found; "
        "stages run through DVC (`dvc repro`), in the folder of their dvc.yaml"
    )
    assert os.listdir(tmp_path / "project") == []


class Evil:
    """A pickle that runs code when loaded without weights_only: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.e2e
def test_a_malicious_pickle_as_model_weights_stops_the_stage_without_running_it(imagefolder: Path, tmp_path: Path):
    project = make_project(tmp_path / "project", imagefolder, model={"weights": "weights/evil.pth"})
    marker = tmp_path / "pwned"
    torch.save({"conv_stem.weight": Evil(marker)}, project / "weights" / "evil.pth")
    proc = run_stage(project, train_cmd("pretrained"))
    assert one_line_error(proc) == (
        "train: error: model.weights: weights/evil.pth: refused or unreadable with weights_only=True "
        "(Unsupported global: GLOBAL getattr was not an allowed global by default.)"
    )
    assert not marker.exists()
