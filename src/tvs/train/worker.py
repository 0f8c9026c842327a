"""The training stage's worker: set a run up (data subset, budget, runtime, bookkeeping) and fit it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from tvs.compute.batches import batch_bounds
from tvs.compute.runtime import make_runtime, seed_everything
from tvs.config import ConfigError, Params, TrainConfig, to_dict
from tvs.data.prepared import MANIFEST, PreparedData, load_prepared
from tvs.data.split import training_subset
from tvs.models.weights import Initial, check_weights_fit, init_model, normalisation
from tvs.train.bookkeeping import Bookkeeping, FitResult
from tvs.train.loop import fit
from tvs.train.resume import ResumeSpec, default_resume_dir, fingerprint
from tvs.train.resume_record import params_digest

log = logging.getLogger(__name__)


def step_budget(train: TrainConfig, train_images: int, min_steps: int) -> TrainConfig:
    """``train`` with its epochs raised, if needed, so that training makes at least ``min_steps`` steps.

    The data-efficiency study sets a floor: without it, 5% of the data for 8 epochs would be a
    handful of steps, and "less data" would be confounded with "less training".
    """
    steps_per_epoch = len(batch_bounds(train_images, train.batch_size, fold_single=True))
    epochs = max(train.epochs, math.ceil(min_steps / steps_per_epoch)) if min_steps > 0 else train.epochs
    return dataclasses.replace(train, epochs=epochs)


def checkpoint_meta(
    params: Params, arm: str, data: PreparedData, result: FitResult, initial: Initial | None = None
) -> dict[str, Any]:
    """The checkpoint's sidecar: what rebuilds the model (offline), where its weights came from, how it was trained."""
    init = params.arm(arm).init
    mean, std = (initial.mean, initial.std) if initial else normalisation(params.model)
    return {
        "arm": arm,
        "arch": params.model.arch,
        "init": init,
        "weights": params.model.weights if init == "pretrained" else None,
        "weights_source": initial.source if initial else None,
        "classes": data.classes,
        "image_size": int(data.images.shape[-1]),
        "mean": list(mean),
        "std": list(std),
        "train_images": int((data.manifest["split"] == "train").sum()),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "best_val_loss": result.best_val_loss,
        "train_seconds": result.train_seconds,
        "diverged": result.diverged_epoch > 0,
        "diverged_epoch": result.diverged_epoch or None,
        "history": result.history,
        "params": to_dict(params),
    }


def check_batch_size(batch_size: int, train_images: int) -> None:
    """A batch cannot be larger than the training split: say so before any work starts."""
    if batch_size > train_images:
        raise ConfigError(
            f"train.batch_size: {batch_size} exceeds the {train_images} training images; lower it "
            "(the split fractions and data.train_fraction set the training split's size)"
        )


def train_arm(
    *, arm: str, data_dir: Path, out: Path, params: Params, live_dir: Path | None = None, min_steps: int = 0
) -> dict[str, Any]:
    """Train one arm and write its checkpoint; per-epoch curves go to DVCLive in ``live_dir``.

    It trains on the nested subset of the training split for ``data.train_fraction`` and ``seed``,
    for at least ``min_steps`` optimizer steps. An interrupted run resumes from its last epoch: the
    state is kept beside ``out`` (see :mod:`tvs.train.resume`), and used again only with the same
    params, data and code. As one of N ranks (torchrun), each step takes ``train.batch_size / N``
    images here, so that a step of all ranks is one step over ``train.batch_size`` images.
    """
    # An unknown arch, or weights that cannot fit it, stop both arms here, before the data are read or
    # anything is written: the scratch arm of a pair whose pretrained arm cannot start trains for nothing.
    # Only names and shapes are read (the file is no dependency of train_scratch: a new one that
    # fits changes nothing it computes).
    check_weights_fit(params.model)
    as_read = params_digest(params)  # before the epochs are raised: what check_params can compute
    data = training_subset(load_prepared(data_dir), params.data.train_fraction, params.seed)
    train_images = len(data.split("train")[0])
    check_batch_size(params.train.batch_size, train_images)  # before any work starts
    train = step_budget(params.train, train_images, min_steps)
    if train.epochs != params.train.epochs:
        log.info(
            "%d training images: %d epochs instead of %d, for at least %d optimizer steps",
            train_images, train.epochs, params.train.epochs, min_steps,
        )  # fmt: skip
        params = dataclasses.replace(params, train=train)
    runtime = make_runtime(params.train)  # also this process's share of every batch (refused if uneven)
    generator = seed_everything(params.seed)
    resume = ResumeSpec(default_resume_dir(out), fingerprint(params, arm, Path(data_dir) / MANIFEST), as_read)
    # The weights are read (and refused) here, before DVCLive makes its folder: a bad file writes nothing.
    initial = init_model(params, params.arm(arm), len(data.classes))
    with open_live(live_dir, runtime.is_main) as live:
        books = Bookkeeping(
            out, lambda result: checkpoint_meta(params, arm, data, result, initial), runtime.is_main, live, resume
        )
        result = fit(params, arm, data, runtime, books, generator=generator, initial=initial)
    if result.diverged_epoch:
        log.warning("%s: diverged at epoch %d; evaluate will report it as diverged", arm, result.diverged_epoch)
    if result.best_epoch:
        log.info(
            "%s: best val accuracy %.4f at epoch %d, %.1fs",
            arm, result.best_val_accuracy, result.best_epoch, result.train_seconds,
        )  # fmt: skip
    return {"best_epoch": result.best_epoch, "train_seconds": result.train_seconds, "diverged": result.diverged_epoch}


def open_live(live_dir: Path | None, is_main: bool) -> contextlib.AbstractContextManager:
    """A DVCLive logger writing only the plots/metrics files (DVC itself tracks the stage)."""
    if live_dir is None or not is_main:
        return contextlib.nullcontext(None)
    from dvclive import Live  # imports heavy optional machinery: only where curves are logged

    return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
