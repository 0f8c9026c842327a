"""Shared fixtures: tiny generated ImageFolders and tiny params, so tests run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may phone home, even through a library

# Small enough for a 2-core CPU: 32 px images, one epoch, batches of 4.
TINY_PARAMS = {
    "seed": 0,
    "lr": 0.003,
    "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
    "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0, "precision": "fp32", "num_threads": 1},
}


def make_image(label_index: int, i: int, size: int = 24) -> Image.Image:
    """A learnable image: class 0 is bright on the left, class 1 on the right, with noise."""
    rng = np.random.default_rng(1000 * label_index + i)
    arr = rng.integers(0, 60, (size, size), dtype=np.uint8)
    half = slice(0, size // 2) if label_index == 0 else slice(size // 2, size)
    arr[:, half] += 150
    return Image.fromarray(arr, mode="L")


def write_imagefolder(root: Path, classes: dict[str, int]) -> Path:
    """Write ``{class: count}`` PNGs under ``root/<class>/``."""
    for label_index, (label, count) in enumerate(classes.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            make_image(label_index, i).save(root / label / f"img{i:03d}.png")
    return root


def write_params(path: Path, **sections) -> Path:
    """The project's ``params.yaml`` with ``TINY_PARAMS``, then ``sections``, merged in."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for overrides in (TINY_PARAMS, sections):
        for key, value in overrides.items():
            if isinstance(value, dict):
                params.setdefault(key, {}).update(value)
            else:
                params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    """Two classes of 12 tiny grayscale PNGs."""
    return write_imagefolder(tmp_path / "raw", {"cats": 12, "dogs": 12})


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    return write_params(tmp_path / "params.yaml")
