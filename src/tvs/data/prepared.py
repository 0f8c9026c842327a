"""What ``prepare`` wrote, opened for reading: the manifest and the memory-mapped uint8 cache.

Manifest row *i* (path, class, sha1, split) is cache row *i*.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tvs.errors import DataError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.csv"
IMAGES = "images.npy"


@dataclass(frozen=True)
class PreparedData:
    """The prepared dataset: manifest, class names and the memory-mapped image cache."""

    manifest: pd.DataFrame
    classes: list[str]
    images: np.ndarray  # (N, 3, H, W) uint8, memory-mapped

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and integer labels of split ``name``."""
        rows = np.array(self.manifest.index[self.manifest["split"] == name])  # a writable copy
        labels = self.manifest.loc[rows, "class"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()
        return rows, labels.astype(np.int64)


def load_prepared(folder: str | Path) -> PreparedData:
    """Open what ``prepare`` wrote in ``folder``."""
    folder = Path(folder)
    manifest_path, images_path = folder / MANIFEST, folder / IMAGES
    for path in (manifest_path, images_path):
        if not path.exists():
            raise DataError(f"{path}: missing; run `dvc repro prepare` first")
    manifest = pd.read_csv(manifest_path, keep_default_na=False, dtype={"class": str, "path": str})
    images = np.load(images_path, mmap_mode="r")
    if len(images) != len(manifest):
        raise DataError(f"{images_path}: {len(images)} images but {manifest_path} lists {len(manifest)}")
    return PreparedData(manifest, sorted(manifest["class"].unique()), images)
