"""Weights and checkpoints that look right but cannot be (docs/reliability.md): refused at load with one
line naming the file and the tensor or field, and an evaluation that never crashes on non-finite outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tvs.config import EvaluateConfig, load_params
from tvs.errors import WeightsError
from tvs.evaluate.metrics import classification_metrics
from tvs.evaluate.scoring import evaluate_arms
from tvs.evaluate.stats import pair_evidence
from tvs.models.archs import build_model
from tvs.models.checkpoint import load_checkpoint, save_checkpoint
from tvs.models.sources import load_file
from tvs.models.weights import init_model, load_pretrained
from tvs.verdict.pair import pair_recommendation, write_verdict

from .conftest import write_imagefolder, write_params
from .stage_runner import evaluate_cmd, make_project, one_line_error, run_stage, train_cmd

CLASSES = ["birds", "cats", "dogs"]
LITE0 = "tf_efficientnet_lite0"


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def negative_variances(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The issue's poisoned weights: right keys and shapes, all finite, every BatchNorm variance -1."""
    return {k: -torch.ones_like(v) if k.endswith("running_var") else v for k, v in state.items()}


# --- weights that cannot be valid are refused at load -------------------------------------------


def test_negative_batchnorm_variances_are_refused_naming_the_file_and_tensor(tmp_path: Path):
    path = save_weights(tmp_path / "negvar.safetensors", negative_variances(build_model("resnet18", 1000).state_dict()))
    with pytest.raises(WeightsError) as err:
        load_pretrained("resnet18", str(path))
    assert str(err.value) == (
        f"model.weights: {path}: 20 BatchNorm running variance(s) hold negative values (first: bn1.running_var); "
        "a variance cannot be negative: use an intact copy"
    )


@pytest.mark.parametrize("value", [complex(1, 2), complex(float("nan"), 0)], ids=["complex", "nan-in-complex"])
def test_complex_weights_are_refused_naming_the_tensor(tmp_path: Path, value: complex):
    state = build_model("resnet18", 1000).state_dict()
    state["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"], value, dtype=torch.complex64)
    path = save_weights(tmp_path / "complex.safetensors", state)
    with pytest.raises(WeightsError) as err:
        load_pretrained("resnet18", str(path))
    assert str(err.value) == (
        f"model.weights: {path}: 1 tensor(s) hold complex numbers (first: layer1.0.conv1.weight, torch.complex64); "
        "network weights are real: use an intact copy"
    )


def test_finite_weights_whose_forward_pass_overflows_are_refused_at_init_naming_the_layer(tmp_path: Path):
    state = build_model("resnet18", 1000).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 3e38)  # finite, but any sum of them is not
    save_weights(tmp_path / "weights" / "huge.safetensors", state)
    params = load_params(
        write_params(tmp_path / "params.yaml", model={"arch": "resnet18", "weights": "weights/huge.safetensors"})
    )
    with pytest.raises(WeightsError) as err:
        init_model(params, params.pretrained, 3)
    assert str(err.value) == (
        f"model.weights: {params.model.weights}: a forward pass on a probe batch gives NaN or infinite values "
        "(first from layer conv1, tensors conv1.*); these weights cannot be trained from: use an intact copy"
    )
    assert init_model(params, params.scratch, 3).source is None  # the scratch arm never reads them


@pytest.mark.e2e
def test_the_issues_negative_variance_repro_stops_training_with_one_line(tmp_path: Path):
    project = make_project(tmp_path / "p", write_imagefolder(tmp_path / "raw", {c: 4 for c in CLASSES}),
                           model={"weights": "weights/negvar.safetensors"})  # fmt: skip
    save_weights(project / "weights" / "negvar.safetensors", negative_variances(build_model(LITE0, 3).state_dict()))
    line = one_line_error(run_stage(project, train_cmd("pretrained")))
    assert line == (
        "train: error: model.weights: weights/negvar.safetensors: 49 BatchNorm running variance(s) hold negative "
        "values (first: blocks.0.0.bn1.running_var); a variance cannot be negative: use an intact copy"
    )
    assert not (project / "models" / "pretrained").exists()


def test_a_protocol_4_pickle_is_refused_without_torchs_two_line_warning(tmp_path: Path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(WeightsError) as err:
        warnings.simplefilter("always")
        load_file(path)
    assert [str(w.message) for w in caught] == []
    assert str(err.value).startswith(f"model.weights: {path}: refused or unreadable with weights_only=True (")


def test_a_hub_name_that_is_a_path_is_one_line_naming_the_key_and_value():
    with pytest.raises(WeightsError) as err:
        load_pretrained("timm:resnet18", "hf-hub:../..")
    assert str(err.value).startswith(
        "model.weights: hf-hub:../..: expected hf-hub:<org>/<name> or hf-hub:<org>/<name>@<revision> (Repo id must"
    )
    assert "\n" not in str(err.value)


# --- evaluate never crashes on non-finite probabilities -----------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    return make_project(root / "project", write_imagefolder(root / "raw", {c: 8 for c in CLASSES}))


def history(epochs: int) -> list[dict[str, float]]:
    return [{"epoch": e, "val_accuracy": 0.3 * e, "val_loss": 1.0, "elapsed_seconds": float(e)}
            for e in range(1, epochs + 1)]  # fmt: skip


def checkpoint(folder: Path, diverged_epoch: int = 0, poisoned: bool = False) -> Path:
    """A 3-class Lite0 checkpoint as training writes it; ``poisoned``: every BatchNorm variance -1."""
    done = 2 if diverged_epoch == 0 else diverged_epoch - 1
    meta = {
        "arch": LITE0, "classes": CLASSES, "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3,
        "train_images": 12, "best_epoch": done, "train_seconds": 2.0, "diverged": diverged_epoch > 0,
        "diverged_epoch": diverged_epoch or None, "history": history(done),
    }  # fmt: skip
    torch.manual_seed(0)
    model = build_model(LITE0, len(CLASSES))
    if poisoned:
        model.load_state_dict(negative_variances(model.state_dict()))
    save_checkpoint(folder, model, meta)
    return folder


@pytest.mark.parametrize(
    ("diverged_epoch", "outcome"),
    [(1, "diverged in epoch 1; scored with its initial weights"),
     (0, "broken: no finite prediction for 6 test images; scored with epoch 2's weights")],
    ids=["flagged-by-training", "finished-but-broken"],
)  # fmt: skip
def test_an_arm_with_nan_outputs_is_scored_and_reported_not_a_crash(
    prepared: Path, tmp_path: Path, diverged_epoch: int, outcome: str
):
    models = {
        "pretrained": checkpoint(tmp_path / "pretrained", diverged_epoch, poisoned=True),
        "scratch": checkpoint(tmp_path / "scratch"),
    }
    out = tmp_path / "out"
    evaluate_arms(models=models, data_dir=prepared / "data" / "prepared", metrics_dir=out, eval_dir=out / "eval",
                  evidence=EvaluateConfig(resamples=200))  # fmt: skip
    broken = json.loads((out / "pretrained.json").read_text())
    assert (broken["diverged"], broken["diverged_epoch"], broken["nonfinite_outputs"]) == (1, diverged_epoch, 6)
    assert broken["accuracy"] == 0.0 and broken["log_loss"] == pytest.approx(np.log(3))
    assert json.loads((out / "scratch.json").read_text())["nonfinite_outputs"] == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["diverged"] == 1 and comparison["accuracy"] is None and comparison["significance"] is None
    predictions = (out / "eval" / "pretrained" / "predictions.csv").read_text().splitlines()
    assert all(",(no prediction)," in row for row in predictions[1:])
    write_verdict(
        metrics_dir=out, sidecars={arm: folder / "meta.json" for arm, folder in models.items()},
        settings=EvaluateConfig(), verdict_path=out / "verdict.md", curve_path=None,
    )  # fmt: skip
    verdict = (out / "verdict.md").read_text()
    assert "**No verdict**: the pretrained arm diverged" in verdict and outcome in verdict


def test_metrics_of_nan_probabilities_count_those_images_wrong():
    probs = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8], [np.inf, 0.0]])
    metrics = classification_metrics(probs, np.array([0, 0, 1, 1]))
    assert metrics["accuracy"] == 0.5 and metrics["balanced_accuracy"] == 0.5
    assert metrics["log_loss"] == pytest.approx((-np.log(0.9) - np.log(0.8) + 2 * np.log(2)) / 4)


# --- a tampered meta.json is one line naming the file and the field ------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("classes", ["birds", "cats"], "classes: 2 names, but the weights' classifier has 3 outputs"),
        ("classes", [*CLASSES, "eels"], "classes: 4 names, but the weights' classifier has 3 outputs"),
        ("classes", None, "classes: expected a list of distinct class names, got null"),
        ("arch", "resnet18", "arch: the weights beside it are not a resnet18 ("),
        ("arch", "resnet_nonesuch", "arch: 'resnet_nonesuch' is not a timm or torchvision model"),
        ("mean", [0.5], "mean: expected 3 finite numbers (one per RGB channel), got [0.5]"),
        ("std", [0.5, 0.5, 0], "std: expected 3 positive numbers (one per RGB channel), got [0.5, 0.5, 0]"),
        ("history", "abc", "history: expected a list of per-epoch objects with epoch, val_accuracy and "
                           "elapsed_seconds, got 'abc'"),
        ("best_epoch", "2", "best_epoch: expected an epoch number (0: none finished), got '2'"),
    ],
)  # fmt: skip
def test_a_tampered_meta_json_is_one_line_naming_the_file_and_field(tmp_path: Path, field, value, message):
    folder = checkpoint(tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(WeightsError) as err:
        load_checkpoint(folder)
    assert str(err.value).startswith(f"{folder / 'meta.json'}: {message}")
    assert str(err.value).endswith("; restore the meta.json training wrote, or rerun the training stage")


def test_a_meta_json_that_is_not_json_or_not_an_object_is_one_line(tmp_path: Path):
    folder = checkpoint(tmp_path / "m")
    (folder / "meta.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match=r"meta\.json: must hold a JSON object, not list; restore"):
        load_checkpoint(folder)
    (folder / "meta.json").write_text("{cut")
    with pytest.raises(WeightsError, match=r"meta\.json: not valid JSON \(.*\); restore"):
        load_checkpoint(folder)


@pytest.mark.e2e
def test_evaluate_stops_with_one_line_on_a_tampered_meta_json(prepared: Path, tmp_path: Path):
    for arm in ("pretrained", "scratch"):
        checkpoint(prepared / "models" / arm)
    meta = prepared / "models" / "scratch" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "classes": [*CLASSES, "eels"]}))
    assert one_line_error(run_stage(prepared, evaluate_cmd())) == (
        "evaluate: error: models/scratch/meta.json: classes: 4 names, but the weights' classifier has 3 outputs; "
        "restore the meta.json training wrote, or rerun the training stage"
    )


# --- time to accuracy against chance ------------------------------------------------------------


def test_a_time_to_accuracy_target_below_chance_is_not_reported_as_reached():
    """2,000 classes, best val accuracy 0.03%: the issue's "only pretrained reached 0.0%" said nothing."""
    correct = {"pretrained": [True, False] * 10, "scratch": [False, True] * 10}
    histories = {
        "pretrained": [{"epoch": 1, "val_accuracy": 0.0003, "elapsed_seconds": 5.0}],
        "scratch": [{"epoch": 1, "val_accuracy": 0.0, "elapsed_seconds": 5.0}],
    }
    settings = EvaluateConfig(resamples=200)
    evidence = pair_evidence(correct, histories, settings, chance=1 / 2000)
    tta = evidence["time_to_accuracy"]
    assert (tta["pretrained_seconds"], tta["scratch_seconds"], tta["chance_val_accuracy"]) == (None, None, 0.0005)
    _, line = pair_recommendation(evidence, settings)
    assert "; no speed to compare: the target, 0.028% validation accuracy, is not above chance (0.05%, a uniform " \
           "guess among 2,000 classes)." in line  # fmt: skip
    above = pair_evidence(correct, histories, settings, chance=1 / 20_000)["time_to_accuracy"]
    assert (above["pretrained_epoch"], above["scratch_seconds"]) == (1, None)  # above chance: timed as before
