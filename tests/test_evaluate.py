"""Scoring checkpoints on the test split: predictions that line up with their images and labels,
the metrics files, and a clear refusal of a model trained on other classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tvs.compute.batches import to_model_input
from tvs.compute.runtime import Runtime
from tvs.config import ARMS, EvaluateConfig, load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.errors import DataError
from tvs.evaluate.metrics import METRIC_KEYS
from tvs.evaluate.scoring import evaluate_arms, predict_arm
from tvs.models.checkpoint import load_checkpoint

from .conftest import fit_arm, write_imagefolder
from .stage_runner import evaluate_cmd, make_project, one_line_error, run_stage

CPU = Runtime(torch.device("cpu"), None, False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with tiny prepared data and both arms trained one epoch, in ``models/<arm>``."""
    root = tmp_path_factory.mktemp("trained")
    project = make_project(root / "project", write_imagefolder(root / "raw", {"cats": 12, "dogs": 12}))
    params = load_params(project / "params.yaml")
    data = load_prepared(project / "data" / "prepared")
    for arm in ARMS:
        fit_arm(params, data, arm, project / "models" / arm)
    return project


def one_by_one(model_dir: Path, images: np.ndarray) -> np.ndarray:
    """The checkpoint's class probabilities for each image, computed alone."""
    model, meta = load_checkpoint(model_dir)
    mean, std = (torch.tensor(meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.inference_mode():
        return np.concatenate(
            [model.eval()(to_model_input(torch.from_numpy(np.array(x[None])), mean, std, CPU)).softmax(1).numpy()
             for x in images]
        )  # fmt: skip


def test_predictions_csv_rows_line_up_with_their_images_and_labels(trained: Path, tmp_path: Path):
    prepared = trained / "data" / "prepared"
    models = {arm: trained / "models" / arm for arm in ARMS}
    evaluate_arms(
        models=models, data_dir=prepared, metrics_dir=tmp_path / "metrics", eval_dir=tmp_path / "eval",
        evidence=EvaluateConfig(resamples=200),
    )  # fmt: skip
    data = load_prepared(prepared)
    row_of = {path: i for i, path in enumerate(data.manifest["path"])}
    for arm, model_dir in models.items():
        predictions = pd.read_csv(tmp_path / "eval" / arm / "predictions.csv", keep_default_na=False)
        assert list(predictions.columns) == ["path", "true", "predicted", "p_cats", "p_dogs"]
        assert sorted(predictions["path"]) == sorted(data.manifest.loc[data.manifest["split"] == "test", "path"])
        # An ImageFolder's class is its folder: each row's label is its own image's.
        assert list(predictions["true"]) == [path.split("/")[0] for path in predictions["path"]]
        # Each row's probabilities are the model's on that row's image, not a neighbour's.
        probs = predictions[["p_cats", "p_dogs"]].to_numpy()
        assert len(np.unique(probs[:, 0].round(6))) == len(predictions)  # rows are told apart
        expected = one_by_one(model_dir, data.images[[row_of[path] for path in predictions["path"]]])
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert list(predictions["predicted"]) == [["cats", "dogs"][i] for i in probs.argmax(1)]
        metrics = json.loads((tmp_path / "metrics" / f"{arm}.json").read_text())
        assert metrics["accuracy"] == pytest.approx((predictions["true"] == predictions["predicted"]).mean())
        assert metrics["test_images"] == 6
    arms = {arm: json.loads((tmp_path / "metrics" / f"{arm}.json").read_text()) for arm in ARMS}
    comparison = json.loads((tmp_path / "metrics" / "comparison.json").read_text())
    assert arms["pretrained"].keys() == arms["scratch"].keys()
    for key in METRIC_KEYS:
        assert comparison[key] == pytest.approx(arms["pretrained"][key] - arms["scratch"][key])
    assert comparison["significance"]["test_images"] == 6 and comparison["diverged"] == 0


@pytest.mark.parametrize(
    ("classes", "names"),
    [
        ({"birds": 6, "cats": 6, "dogs": 6}, "['birds', 'cats', 'dogs']"),
        ({"cats": 6, "wolves": 6}, "['cats', 'wolves']"),
    ],
)
def test_a_model_trained_on_other_classes_is_refused_naming_both(trained: Path, tmp_path: Path, classes, names):
    params = load_params(trained / "params.yaml")
    raw = write_imagefolder(tmp_path / "raw", classes)
    prepare_dataset(raw=raw, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    model_dir = trained / "models" / "scratch"
    with pytest.raises(DataError) as err:
        predict_arm(model_dir, tmp_path / "prep")
    assert str(err.value) == f"{model_dir}: trained on classes ['cats', 'dogs'], data has {names}; rerun training"


@pytest.mark.e2e
def test_evaluating_models_of_other_classes_stops_the_stage_with_one_line(trained: Path, tmp_path: Path):
    raw = write_imagefolder(tmp_path / "raw", {"birds": 6, "cats": 6, "dogs": 6})
    project = make_project(tmp_path / "project", raw)  # a class was added since the models were trained
    shutil.copytree(trained / "models", project / "models")
    proc = run_stage(project, evaluate_cmd())
    assert one_line_error(proc) == (
        "evaluate: error: models/pretrained: trained on classes ['cats', 'dogs'], "
        "data has ['birds', 'cats', 'dogs']; rerun training"
    )
    assert not (project / "metrics").exists()
