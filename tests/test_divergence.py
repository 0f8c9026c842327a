"""Every combination of diverged and finished arms ends with metrics, a comparison that says what
diverged, and a verdict page (docs/reliability.md, "Training that diverges")."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tvs.config import EvaluateConfig, load_params
from tvs.data.prepare import prepare_dataset
from tvs.errors import WeightsError
from tvs.evaluate.scoring import evaluate_arms
from tvs.models.archs import build_model
from tvs.models.checkpoint import save_checkpoint
from tvs.models.weights import load_pretrained
from tvs.verdict.pair import write_verdict

from .conftest import PROJECT, write_params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    from .conftest import write_imagefolder

    root = tmp_path_factory.mktemp("diverge")
    raw = write_imagefolder(root / "raw", {"cats": 8, "dogs": 8})
    params = load_params(write_params(root / "params.yaml"))
    prepare_dataset(raw=raw, out=root / "prepared", params=params, summary_path=root / "prepare.json")
    return root / "prepared"


def history(epochs: int) -> list[dict[str, float]]:
    return [
        {"epoch": e, "train_loss": 0.7, "train_accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5 + e / 10,
         "lr": 1e-3, "epoch_seconds": 1.0, "elapsed_seconds": float(e)}
        for e in range(1, epochs + 1)
    ]  # fmt: skip


def checkpoint(folder: Path, arm: str, diverged_epoch: int) -> Path:
    """A checkpoint as training leaves it: diverged in ``diverged_epoch`` (0: finished 3 epochs)."""
    done = 3 if diverged_epoch == 0 else diverged_epoch - 1
    meta = {
        "arm": arm, "arch": "tf_efficientnet_lite0", "init": arm, "weights": None, "classes": ["cats", "dogs"],
        "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "train_images": 8, "best_epoch": done,
        "best_val_accuracy": 0.5, "best_val_loss": 0.69, "train_seconds": 3.0, "diverged": diverged_epoch > 0,
        "diverged_epoch": diverged_epoch or None, "history": history(done), "params": {},
    }  # fmt: skip
    torch.manual_seed(0)
    save_checkpoint(folder / arm, build_model("tf_efficientnet_lite0", 2), meta)
    return folder / arm


@pytest.mark.parametrize(
    ("pretrained", "scratch"),
    [(1, 0), (0, 1), (3, 0), (0, 2), (1, 1), (2, 3)],
    ids=["pretrained@1", "scratch@1", "pretrained@3", "scratch@2", "both@1", "both-later"],
)
def test_evaluate_reports_what_diverged_for_every_combination(
    prepared: Path, tmp_path: Path, pretrained: int, scratch: int
):
    models = {
        "pretrained": checkpoint(tmp_path, "pretrained", pretrained),
        "scratch": checkpoint(tmp_path, "scratch", scratch),
    }
    out = tmp_path / "out"

    evaluate_arms(models=models, data_dir=prepared, metrics_dir=out, eval_dir=out / "eval")
    write_verdict(
        metrics_dir=out, sidecars={arm: folder / "meta.json" for arm, folder in models.items()},
        settings=EvaluateConfig(), verdict_path=out / "verdict.md", curve_path=out / "curve.png",
    )  # fmt: skip

    for arm, epoch in (("pretrained", pretrained), ("scratch", scratch)):
        metrics = json.loads((out / f"{arm}.json").read_text())
        assert (metrics["diverged"], metrics["diverged_epoch"]) == (int(epoch > 0), epoch)
        assert 0 <= metrics["accuracy"] <= 1 and math.isfinite(metrics["log_loss"])
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["diverged"] == 1
    assert (comparison["pretrained_diverged_epoch"], comparison["scratch_diverged_epoch"]) == (pretrained, scratch)
    assert comparison["accuracy"] is None and comparison["significance"] is None
    assert comparison["majority_accuracy"] == 0.5  # the baseline stays: it belongs to the test split
    verdict = (out / "verdict.md").read_text()
    diverged = [arm for arm, epoch in (("pretrained", pretrained), ("scratch", scratch)) if epoch]
    assert f"**No verdict**: {' and '.join(f'the {arm} arm' for arm in diverged)} diverged" in verdict
    for epoch in (pretrained, scratch):
        if epoch:
            assert f"diverged in epoch {epoch}; scored with" in verdict
    assert (out / "curve.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.e2e
def test_the_readmes_divergence_example_ends_with_a_verdict(tmp_path: Path):
    """`dvc exp run -S lr=1e9`, as its stages run it: both arms diverge in epoch 1, evaluate still succeeds."""
    from .conftest import write_imagefolder

    write_imagefolder(tmp_path / "data" / "raw", {"cats": 8, "dogs": 8})
    write_params(tmp_path / "params.yaml", lr=1e9)
    shutil.copy(PROJECT / "dvc.yaml", tmp_path / "dvc.yaml")
    stages = PROJECT / "src" / "stages"

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(stages / script), *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert (
        run("prepare.py", "--raw", "data/raw", "--out", "data/prepared", "--summary", "metrics/prepare.json").returncode
        == 0
    )
    for arm in ("pretrained", "scratch"):
        proc = run(
            "train.py", "--arm", arm, "--data", "data/prepared", "--out", f"models/{arm}", "--live", f"dvclive/{arm}"
        )
        assert proc.returncode == 0 and "training diverged" in proc.stderr, proc.stderr
    proc = run(
        "evaluate.py", "--data", "data/prepared", "--pretrained", "models/pretrained", "--scratch", "models/scratch",
        "--metrics", "metrics", "--eval-dir", "eval",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run(
        "verdict.py", "--metrics", "metrics", "--pretrained", "models/pretrained/meta.json",
        "--scratch", "models/scratch/meta.json", "--verdict", "reports/verdict.md",
        "--curve-plot", "reports/val_accuracy.png",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comparison = json.loads((tmp_path / "metrics" / "comparison.json").read_text())
    assert (comparison["pretrained_diverged_epoch"], comparison["scratch_diverged_epoch"]) == (1, 1)
    assert (
        "**No verdict**: the pretrained arm and the scratch arm diverged"
        in (tmp_path / "reports" / "verdict.md").read_text()
    )


def test_weights_with_nan_values_are_refused_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = build_model("resnet18", 1000).state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    (tmp_path / "weights").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "weights" / "nan.safetensors"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError) as err:
        load_pretrained("resnet18", "weights/nan.safetensors")
    assert str(err.value) == (
        "model.weights: weights/nan.safetensors: 1 tensor(s) hold NaN or infinite values "
        "(first: layer1.0.conv1.weight); these weights cannot be trained from: use an intact copy"
    )


def test_a_corrupt_safetensors_file_is_one_clear_error(tmp_path: Path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match=r"^model\.weights: .*cut\.safetensors: not a readable safetensors file"):
        load_pretrained("resnet18", str(bad))
