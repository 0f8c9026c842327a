"""What ``prepare`` wrote, opened for reading: the manifest and the memory-mapped uint8 cache.

Manifest row *i* (path, class, sha1, split) is cache row *i*.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tvs.errors import DataError, list_preview
from tvs.io import read_csv

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.csv"
IMAGES = "images.npy"
COLUMNS = ("path", "class", "sha1", "split")  # the manifest's columns, all text
NEEDED = ("path", "class", "split")  # the ones training and evaluation read
REWRITE = "It is not what `prepare` wrote: restore it with `dvc checkout`, or rerun `dvc repro prepare`."


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
    """Open what ``prepare`` wrote in ``folder``.

    Raises:
        DataError: a file missing, or a manifest that is not what ``prepare`` writes (not a CSV
            table, a column missing, an unknown split, a split with no rows, another row count
            than the cache), naming the file and the problem in one line.
    """
    folder = Path(folder)
    manifest_path, images_path = folder / MANIFEST, folder / IMAGES
    for path in (manifest_path, images_path):
        if not path.exists():
            raise DataError(f"{path}: missing; run `dvc repro prepare` first")
    try:
        manifest = read_csv(manifest_path, text=COLUMNS)
    except DataError as err:
        raise DataError(f"{err}. {REWRITE}") from None
    check_manifest(manifest, manifest_path)
    images = np.load(images_path, mmap_mode="r")
    if len(images) != len(manifest):
        raise DataError(f"{images_path}: {len(images)} images but {manifest_path} lists {len(manifest)}")
    return PreparedData(manifest, sorted(manifest["class"].unique()), images)


def check_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Refuse a manifest without the columns training and evaluation read, or without rows in each split.

    Raises:
        DataError: naming ``path`` and the problem.
    """
    missing = [column for column in NEEDED if column not in manifest.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)} (it needs {', '.join(NEEDED)}). {REWRITE}")
    unknown = sorted(set(manifest["split"]) - set(SPLITS))
    if unknown:
        rows = int((~manifest["split"].isin(SPLITS)).sum())
        raise DataError(
            f"{path}: {rows} row(s) with an unknown split: {list_preview([repr(u) for u in unknown])} "
            f"(valid: {', '.join(SPLITS)}). {REWRITE}"
        )
    empty = [split for split in SPLITS if not (manifest["split"] == split).any()]
    if empty:
        raise DataError(f"{path}: no rows in the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''}. {REWRITE}")
