"""The training loop on tiny data: one code path for both arms, what makes an arm an arm (its
initial weights, lr_mult, freeze_epochs), augmentation, the schedule and the stage's worker."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tvs.compute.batches import to_model_input
from tvs.compute.runtime import Runtime, make_runtime, seed_everything
from tvs.config import ARMS, TrainConfig, load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.data.split import training_sizes, training_subset
from tvs.evaluate.scoring import predict_arm
from tvs.models.archs import arch_spec, build_model, head_prefix
from tvs.models.checkpoint import load_checkpoint
from tvs.models.weights import init_model
from tvs.train.augment import augment, random_flips
from tvs.train.bookkeeping import Bookkeeping
from tvs.train.loop import fit, warmup_cosine
from tvs.train.worker import checkpoint_meta, step_budget, train_arm

from .conftest import fit_arm, write_params


@pytest.fixture
def prepared(imagefolder: Path, tmp_path: Path):
    params = load_params(write_params(tmp_path / "params.yaml", train={"epochs": 2}))
    prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    return params, load_prepared(tmp_path / "prep")


@pytest.fixture
def training_inputs() -> Iterator[list[torch.Tensor]]:
    """Every batch a Lite0 network trains on (augmented and normalised), in order, wherever it was built."""
    seen: list[torch.Tensor] = []
    network = type(build_model("tf_efficientnet_lite0", 2))

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if type(module) is network and module.training:
            seen.append(inputs[0].clone())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    yield seen
    handle.remove()


def normalised(images: np.ndarray, arch: str) -> torch.Tensor:
    """Cache images as the model sees them without augmentation."""
    spec = arch_spec(arch)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
    return to_model_input(torch.from_numpy(np.array(images)), mean, std, Runtime(torch.device("cpu"), None, False))


def flips(x: torch.Tensor) -> list[bytes]:
    return [v.contiguous().numpy().tobytes() for v in (x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2))]


def key(x: torch.Tensor) -> bytes:
    return x.contiguous().numpy().tobytes()


@pytest.mark.parametrize("arm", ARMS)
def test_fit_writes_a_self_describing_checkpoint_of_the_best_epoch(prepared, tmp_path: Path, arm: str):
    params, data = prepared
    result = fit_arm(params, data, arm, tmp_path / arm)
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] == result.best_val_accuracy
    model, meta = load_checkpoint(tmp_path / arm)
    assert meta["arm"] == arm and meta["init"] == arm and meta["classes"] == ["cats", "dogs"]
    assert meta["best_epoch"] == result.best_epoch and meta["train_seconds"] > 0 and meta["train_images"] == 12
    assert (meta["weights"] is None) == (arm == "scratch")
    probs, labels, _ = predict_arm(tmp_path / arm, tmp_path / "prep", split="val")
    assert probs.shape == (len(labels), 2)
    # The checkpoint is the best epoch's: re-scoring it on val reproduces the logged accuracy.
    assert (probs.argmax(1) == labels).mean() == pytest.approx(result.best_val_accuracy, abs=1e-9)


def test_arms_train_on_the_same_batches_in_the_same_order_with_the_same_augmentation(
    prepared, tmp_path: Path, training_inputs: list[torch.Tensor]
):
    _, data = prepared
    params = load_params(write_params(tmp_path / "params.yaml"))  # one epoch
    runs = {}
    for arm in ARMS:
        training_inputs.clear()
        runs[arm] = (fit_arm(params, data, arm, tmp_path / arm), list(training_inputs))
    (pre, pre_inputs), (scr, scr_inputs) = runs["pretrained"], runs["scratch"]
    assert len(pre_inputs) == 3  # 12 training images in batches of 4
    assert all(torch.equal(a, b) for a, b in zip(pre_inputs, scr_inputs, strict=True))
    assert [r["lr"] for r in pre.history] == [r["lr"] for r in scr.history]
    assert pre.history[0]["train_loss"] != scr.history[0]["train_loss"]  # the initial weights differ

    # What was compared holds the order and the augmentation: each input is a flip of a training
    # image, every training image is seen once in the epoch, and some are flipped.
    train_images = normalised(data.images[data.split("train")[0]], params.model.arch)
    variants = {v: i for i, image in enumerate(train_images) for v in flips(image)}
    seen = [image for batch in scr_inputs for image in batch]
    assert all(key(image) in variants for image in seen)
    assert sorted(variants[key(image)] for image in seen) == list(range(12))
    assert any(key(image) != key(train_images[variants[key(image)]]) for image in seen)
    # ...and a different seed would have given other batches.
    training_inputs.clear()
    fit_arm(load_params(write_params(tmp_path / "seed1.yaml", seed=1)), data, "scratch", tmp_path / "other")
    assert not all(torch.equal(a, b) for a, b in zip(training_inputs, scr_inputs, strict=True))


def test_same_seed_on_cpu_gives_bit_identical_results(prepared, tmp_path: Path):
    params, data = prepared
    first = fit_arm(params, data, "scratch", tmp_path / "a")
    second = fit_arm(params, data, "scratch", tmp_path / "b")
    strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in first.history]
    assert strip == [{k: v for k, v in r.items() if "seconds" not in k} for r in second.history]
    a, _ = load_checkpoint(tmp_path / "a")
    b, _ = load_checkpoint(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


class EpochParameters(Bookkeeping):
    """Bookkeeping that also keeps a copy of the model's parameters at the end of every epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs: list[dict[str, torch.Tensor]] = []

    def end_epoch(self, row, model):
        self.epochs.append({name: p.detach().clone() for name, p in model.named_parameters()})
        super().end_epoch(row, model)


def changed(start: dict[str, torch.Tensor], now: dict[str, torch.Tensor], head: str) -> dict[str, list[str]]:
    """The parameters of the head and of the backbone that differ from ``start``."""
    moved = [name for name, p in now.items() if not torch.equal(p, start[name])]
    return {"head": [n for n in moved if n.startswith(head)], "backbone": [n for n in moved if not n.startswith(head)]}


def test_freeze_epochs_train_only_the_head_then_the_whole_network(prepared, tmp_path: Path):
    _, data = prepared
    runs = {}
    for freeze in (1, 0):
        params = load_params(
            write_params(tmp_path / f"f{freeze}.yaml", train={"epochs": 2}, pretrained={"freeze_epochs": freeze})
        )
        seed_everything(params.seed)
        start = dict(init_model(params, params.pretrained, 2).model.named_parameters())  # what fit starts from
        books = EpochParameters(tmp_path / f"m{freeze}", lambda r, p=params: checkpoint_meta(p, "pretrained", data, r))
        fit(params, "pretrained", data, make_runtime(params.train), books, generator=seed_everything(params.seed))
        head = head_prefix(build_model(params.model.arch, 2))
        runs[freeze] = [changed(start, epoch, head) for epoch in books.epochs]
    frozen, free = runs[1], runs[0]
    assert frozen[0] == {"head": ["classifier.weight", "classifier.bias"], "backbone": []}
    assert len(frozen[1]["backbone"]) > 100  # unfrozen in epoch 2
    assert len(free[0]["backbone"]) > 100  # without freezing, epoch 1 trains the backbone too


def test_lr_mult_scales_its_own_arms_learning_rate_only(prepared, tmp_path: Path):
    _, data = prepared
    params = load_params(write_params(tmp_path / "mult.yaml", scratch={"lr_mult": 4}))
    lrs = {arm: [row["lr"] for row in fit_arm(params, data, arm, tmp_path / arm).history] for arm in ARMS}
    assert lrs == {"pretrained": [pytest.approx(params.lr)], "scratch": [pytest.approx(4 * params.lr)]}  # no warm-up


def test_training_trains_on_the_nested_subset_of_train_fraction_and_records_its_size(
    imagefolder: Path, tmp_path: Path, training_inputs: list[torch.Tensor], caplog
):
    # prepare keeps every training image; the training stage applies data.train_fraction.
    full = load_params(write_params(tmp_path / "params.yaml", train={"augment": "none"}))
    prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=full, summary_path=tmp_path / "s.json")
    half = load_params(tmp_path / "params.yaml", overrides={"data.train_fraction": 0.5})
    with caplog.at_level(logging.INFO):
        train_arm(arm="scratch", data_dir=tmp_path / "prep", out=tmp_path / "models" / "scratch", params=half)
    meta = json.loads((tmp_path / "models" / "scratch" / "meta.json").read_text())
    data = load_prepared(tmp_path / "prep")
    assert meta["train_images"] == 6 == training_sizes(data.manifest, 0.5)[0]
    assert meta["params"]["data"]["train_fraction"] == 0.5
    assert (
        "scratch: tf_efficientnet_lite0, 6 train / 6 val images, 2 classes, adamw lr 0.003, cpu, fp32"
        in caplog.messages
    )
    rows, _ = training_subset(data, 0.5, half.seed).split("train")
    subset = sorted(key(image) for image in normalised(data.images[rows], half.model.arch))
    assert sorted(key(image) for batch in training_inputs for image in batch) == subset


def test_step_budget_raises_epochs_to_the_minimum_number_of_steps_and_never_lowers_them():
    train = TrainConfig(epochs=8, batch_size=64)
    assert step_budget(train, 85, min_steps=40).epochs == 20  # 2 steps per epoch
    assert step_budget(train, 1706, min_steps=40).epochs == 8  # 27 steps per epoch: 8 epochs suffice
    assert step_budget(train, 85, min_steps=0).epochs == 8


def test_warmup_then_cosine_schedule():
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(2) == pytest.approx(1.0) and factor(6) == pytest.approx(0.5) and factor(10) == pytest.approx(0.0)
    assert warmup_cosine(4, 0)(0) == 1.0


# --- augmentation --------------------------------------------------------------------------------

# A 4x4 image with no symmetry of its own: its eight symmetries are eight different images.
IMAGE = torch.arange(16, dtype=torch.uint8).view(1, 4, 4).repeat(3, 1, 1)
FLIPS = {key(IMAGE.flip(dims)) for dims in ((), (-1,), (-2,), (-1, -2))}
DIHEDRAL = {key(torch.rot90(t, k, (-2, -1))) for t in (IMAGE, IMAGE.transpose(-1, -2)) for k in range(4)}


def drawn(kind: str, seed: int = 0) -> list[bytes]:
    out = augment(IMAGE.repeat(256, 1, 1, 1), kind, torch.Generator().manual_seed(seed))
    return [key(image) for image in out]


def test_flips_draw_the_four_flips_of_each_image_independently():
    assert len(FLIPS) == 4 and set(drawn("flips")) == FLIPS
    assert drawn("flips", seed=0) == drawn("flips", seed=0) != drawn("flips", seed=1)  # seeded per run
    a = random_flips(IMAGE.repeat(2, 1, 1, 1), torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8 and a.shape == (2, 3, 4, 4)


def test_dihedral_draws_all_eight_symmetries_of_the_square_rotations_included():
    assert len(DIHEDRAL) == 8 and set(drawn("dihedral")) == DIHEDRAL
    rotated = key(torch.rot90(IMAGE, 1, (-2, -1)))
    assert rotated in set(drawn("dihedral")) and rotated not in FLIPS  # what flips alone never give


def test_no_augmentation_leaves_the_batch_and_the_generator_alone():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert set(drawn("none")) == {key(IMAGE)}
    assert torch.equal(augment(IMAGE[None], "none", generator), IMAGE[None])
    assert torch.equal(generator.get_state(), state)
