"""Where models run: device, precision and sharding decided once, and batches from the uint8 cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvs.compute import runtime
from tvs.compute.batches import iterate_batches
from tvs.compute.runtime import Runtime, resolve_device, resolve_precision
from tvs.config import ConfigError

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("mkldnn", "avx512_bf16", "amx", "expected"),
    [
        (True, False, False, None),  # AVX2 or AVX-512 without BF16: oneDNN emulates bf16, slower than fp32
        (True, True, False, torch.bfloat16),
        (True, False, True, torch.bfloat16),
        (False, True, True, None),  # no oneDNN at all
    ],
)
def test_precision_auto_on_the_cpu_is_bf16_only_with_native_bf16_instructions(
    monkeypatch, mkldnn: bool, avx512_bf16: bool, amx: bool, expected
):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_precision("auto", CPU) is expected
    assert resolve_precision("fp32", CPU) is None  # an explicit choice wins whatever the CPU
    assert resolve_precision("bf16", CPU) is torch.bfloat16


def test_precision_auto_on_cuda_is_fp32_and_explicit_choices_are_kept(monkeypatch):
    monkeypatch.setattr(runtime, "_cpu_has_fast_bf16", lambda: True)  # the CPU's answer must not leak to CUDA
    assert resolve_precision("auto", torch.device("cuda", 0)) is None
    assert resolve_precision("fp16", torch.device("cuda", 0)) is torch.float16
    assert resolve_precision("fp16", CPU) is torch.float16


def test_cuda_on_a_machine_without_cuda_is_one_clear_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError) as err:
            resolve_device(name)
        assert str(err.value) == f"train.device: {name} requested but CUDA is not available; use 'auto' or 'cpu'"
    assert resolve_device("auto") == CPU and resolve_device("cpu") == CPU


def test_a_gpu_index_past_the_visible_ones_and_a_non_device_are_config_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:3")
    assert str(err.value) == "train.device: cuda:3 requested but only 1 GPU(s) are visible"
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:x")
    assert str(err.value) == "train.device: 'cuda:x' is not a device; use 'auto', 'cpu' or 'cuda[:N]'"


def test_each_rank_takes_an_equal_disjoint_shard_of_the_order():
    order = torch.tensor([6, 2, 4, 0, 5, 1, 3])
    shards = [Runtime(CPU, None, False, rank=r, world_size=2).shard(order).tolist() for r in (0, 1)]
    assert shards == [[6, 4, 5], [2, 0, 1]]  # the odd one out is dropped, as DistributedSampler does
    assert not Runtime(CPU, None, False, rank=1, world_size=2).is_main
    assert Runtime(CPU, None, False).shard(order) is order


def test_batches_gather_the_given_rows_with_their_labels_in_order():
    images = np.arange(10 * 3 * 2 * 2, dtype=np.uint8).reshape(10, 3, 2, 2)
    rows, labels = torch.tensor([7, 2, 9, 0, 4]), torch.tensor([1, 0, 1, 0, 1])
    batches = list(iterate_batches(images, rows, labels, 2, Runtime(CPU, None, False)))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([x for x, _ in batches]), torch.from_numpy(images[[7, 2, 9, 0, 4]]))
    assert torch.cat([y for _, y in batches]).tolist() == [1, 0, 1, 0, 1]
    on_device = list(iterate_batches(torch.from_numpy(images), rows, labels, 2, Runtime(CPU, None, False)))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, on_device, strict=True))
