"""The training loop on tiny data: one code path for both arms, checkpoints, schedules."""

from pathlib import Path

import pytest
import torch

from tvs.checkpoint import load_checkpoint
from tvs.config import load_params
from tvs.data import load_prepared, prepare_dataset
from tvs.evaluation import predict_arm
from tvs.runtime import Runtime, make_runtime, resolve_precision, seed_everything
from tvs.training import fit, random_flips, warmup_cosine

from .conftest import write_params


@pytest.fixture
def prepared(imagefolder: Path, tmp_path: Path):
    params = load_params(write_params(tmp_path / "params.yaml", train={"epochs": 2}))
    prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    return params, load_prepared(tmp_path / "prep")


def _fit(params, data, arm, out):
    runtime = make_runtime(params.train)
    return fit(params, arm, data, runtime, out, generator=seed_everything(params.seed))


@pytest.mark.parametrize("arm", ["pretrained", "scratch"])
def test_fit_writes_a_self_describing_checkpoint_of_the_best_epoch(prepared, tmp_path: Path, arm: str):
    params, data = prepared
    result = _fit(params, data, arm, tmp_path / arm)
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] == result.best_val_accuracy
    model, meta = load_checkpoint(tmp_path / arm)
    assert meta["arm"] == arm and meta["init"] == arm and meta["classes"] == ["cats", "dogs"]
    assert meta["best_epoch"] == result.best_epoch and meta["train_seconds"] > 0
    assert (meta["weights"] is None) == (arm == "scratch")
    probs, labels, _ = predict_arm(tmp_path / arm, tmp_path / "prep", split="val")
    assert probs.shape == (len(labels), 2)
    # The checkpoint is the best epoch's: re-scoring it on val reproduces the logged accuracy.
    assert (probs.argmax(1) == labels).mean() == pytest.approx(result.best_val_accuracy, abs=1e-9)


def test_arms_share_everything_but_their_initial_weights(prepared, tmp_path: Path):
    params, data = prepared
    torch.manual_seed(0)
    pre = _fit(params, data, "pretrained", tmp_path / "p")
    scr = _fit(params, data, "scratch", tmp_path / "s")
    assert [set(r) for r in pre.history] == [set(r) for r in scr.history]
    assert [r["lr"] for r in pre.history] == [r["lr"] for r in scr.history]
    assert pre.history[0]["train_loss"] != scr.history[0]["train_loss"]


def test_same_seed_on_cpu_gives_bit_identical_results(prepared, tmp_path: Path):
    params, data = prepared
    first = _fit(params, data, "scratch", tmp_path / "a")
    second = _fit(params, data, "scratch", tmp_path / "b")
    strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in first.history]
    assert strip == [{k: v for k, v in r.items() if "seconds" not in k} for r in second.history]
    a, _ = load_checkpoint(tmp_path / "a")
    b, _ = load_checkpoint(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_batch_larger_than_the_training_split_is_refused(prepared, tmp_path: Path):
    params, data = prepared
    params = load_params(write_params(tmp_path / "big.yaml", train={"batch_size": 512}))
    with pytest.raises(ValueError, match=r"train\.batch_size: 512 exceeds the 12 training images"):
        _fit(params, data, "scratch", tmp_path / "x")


def test_warmup_then_cosine_schedule():
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(2) == pytest.approx(1.0) and factor(6) == pytest.approx(0.5) and factor(10) == pytest.approx(0.0)
    assert warmup_cosine(4, 0)(0) == 1.0


def test_random_flips_are_batched_seeded_and_only_flip():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4).repeat(16, 1, 1, 1)
    a = random_flips(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, random_flips(x, torch.Generator().manual_seed(0)))
    variants = {
        x[0].numpy().tobytes(),
        x[0].flip(-1).numpy().tobytes(),
        x[0].flip(-2).numpy().tobytes(),
        x[0].flip(-1).flip(-2).numpy().tobytes(),
    }
    assert {a[i].numpy().tobytes() for i in range(0, 32, 2)} <= variants
    assert len({a[i].numpy().tobytes() for i in range(0, 32, 2)}) > 1


def test_precision_auto_is_decided_per_device():
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("fp16", torch.device("cpu")) is torch.float16
    assert resolve_precision("auto", torch.device("cpu")) in (torch.bfloat16, None)
    rt = Runtime(torch.device("cpu"), None, False, rank=1, world_size=2)
    assert rt.shard(torch.arange(7)).tolist() == [1, 3, 5] and not rt.is_main
