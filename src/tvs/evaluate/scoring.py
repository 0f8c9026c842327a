"""Score trained checkpoints on the test split: metrics per arm, their comparison, confusion plots.

The verdict that reads these files is another stage's job (:mod:`tvs.verdict.pair`): scoring is
the expensive part, and its outputs are all DVC can restore from its run-cache.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tvs.compute.batches import iterate_batches, predict_proba, to_model_input
from tvs.compute.runtime import Runtime
from tvs.config import EvaluateConfig
from tvs.data.prepared import load_prepared
from tvs.errors import DataError
from tvs.evaluate.metrics import arm_metrics, baseline, compare, confusion, predicted_classes
from tvs.evaluate.stats import pair_evidence
from tvs.io import write_csv, write_json
from tvs.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

NO_PREDICTION_NAME = "(no prediction)"  # predictions.csv's class for an image with NaN or infinite probabilities


def predict_arm(
    model_dir: Path, data_dir: Path, split: str = "test", batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Probabilities of a checkpoint on one split of the prepared data (fp32, no augmentation)."""
    data = load_prepared(data_dir)
    model, meta = load_checkpoint(model_dir)
    if meta["classes"] != data.classes:
        raise DataError(f"{model_dir}: trained on classes {meta['classes']}, data has {data.classes}; rerun training")
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    rows, labels = data.split(split)
    batches = iterate_batches(data.images, torch.from_numpy(rows), torch.from_numpy(labels), batch_size, runtime)
    probs, true = predict_proba(model, batches, lambda x: to_model_input(x, mean, std, runtime), runtime)
    return probs, true, meta


def divergence(meta: dict[str, Any], nonfinite_outputs: int = 0) -> dict[str, int]:
    """A checkpoint's divergence flags as numbers (0: did not diverge), so `dvc metrics` shows them.

    A model that gives NaN or infinite probabilities on test images is broken whatever its sidecar
    says (weights changed after training, say): it is flagged as diverged, so that no comparison is
    drawn from it; ``diverged_epoch`` stays the sidecar's (0 if training finished).
    """
    diverged = bool(meta.get("diverged")) or nonfinite_outputs > 0
    return {"diverged": int(diverged), "diverged_epoch": int(meta.get("diverged_epoch") or 0)}


def guard_comparison(comparison: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """If an arm diverged, its numbers are not a fair comparison: the differences become null.

    What diverged stays visible: ``diverged`` (1/0) and each arm's ``<arm>_diverged_epoch`` (0: it
    finished).
    """
    diverged = sorted(arm for arm, metrics in results.items() if metrics.get("diverged"))
    if diverged:
        log.warning("%s diverged: comparison.json holds no differences (null), only the flags", ", ".join(diverged))
    epochs = {f"{arm}_diverged_epoch": int(metrics.get("diverged_epoch") or 0) for arm, metrics in results.items()}
    return {**{k: None if diverged else v for k, v in comparison.items()}, "diverged": int(bool(diverged)), **epochs}


def evaluate_arms(
    *,
    models: dict[str, Path],
    data_dir: Path,
    metrics_dir: Path,
    eval_dir: Path,
    evidence: EvaluateConfig | None = None,
) -> dict[str, Any]:
    """Score each arm on the test split; write per-arm metrics, the comparison and confusion plots.

    ``comparison.json`` also holds the paired evidence (McNemar, bootstrap CI, time-to-accuracy)
    and the majority-class baseline of the test split.
    """
    from dvclive import Live

    evidence = evidence or EvaluateConfig()
    results, correct, metas = {}, {}, {}
    manifest = load_prepared(data_dir).manifest
    test_paths = manifest.loc[manifest["split"] == "test", "path"].to_numpy()
    for arm, model_dir in models.items():
        probs, labels, meta = predict_arm(model_dir, data_dir)
        metrics = arm_metrics(probs, labels, meta, evidence.confidence)
        results[arm] = {**metrics, **divergence(meta, metrics["nonfinite_outputs"])}
        if metrics["nonfinite_outputs"]:
            log.warning("%s: NaN or infinite probabilities on %d test images", arm, metrics["nonfinite_outputs"])
        predicted = predicted_classes(probs)
        correct[arm], metas[arm] = predicted == labels, meta
        classes = np.array(meta["classes"])
        names = np.array([*meta["classes"], NO_PREDICTION_NAME])  # NO_PREDICTION (-1) indexes the last
        with Live(dir=str(eval_dir / arm), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            live.log_sklearn_plot("confusion_matrix", classes[labels].tolist(), names[predicted].tolist())
        predictions = pd.DataFrame({"path": test_paths, "true": classes[labels], "predicted": names[predicted]})
        for i, name in enumerate(classes):
            predictions[f"p_{name}"] = probs[:, i]
        write_csv(predictions, eval_dir / arm / "predictions.csv")
        write_json(metrics_dir / f"{arm}.json", results[arm])
        log.info("%s: %s | confusion %s", arm, results[arm], confusion(probs, labels).tolist())
    if {"pretrained", "scratch"} <= results.keys():
        histories = {arm: meta["history"] for arm, meta in metas.items()}
        if any(r["diverged"] for r in results.values()):  # no fair evidence to compute (maybe no history at all)
            evidence_part = {"significance": None, "time_to_accuracy": None}
        else:
            evidence_part = pair_evidence(correct, histories, evidence, chance=1 / len(metas["pretrained"]["classes"]))
        comparison = {**compare(results["pretrained"], results["scratch"]), **evidence_part}
        # The baseline belongs to the test split, not to the arms: it stays when an arm diverged.
        comparison = {**guard_comparison(comparison, results), **baseline(labels, metas["pretrained"]["classes"])}
        write_json(metrics_dir / "comparison.json", comparison)
    return results
