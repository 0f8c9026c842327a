"""Scan an ImageFolder, check it, split it, and cache it as resized uint8 tensors.

``prepare`` decodes every image exactly once, here. Training and evaluation read the cache
(``images.npy``, memory-mapped) and the manifest (``manifest.csv``: path, class, split), whose
rows are aligned: manifest row *i* is cache row *i*.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from tvs.config import DataConfig, Params
from tvs.io import atomic_path, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNUSED = "unused"  # training images left out by data.train_fraction
MANIFEST = "manifest.csv"
IMAGES = "images.npy"
MAX_LISTED = 10


class DataError(ValueError):
    """The image folder cannot be used as it is; the message names the files or classes."""


@dataclass(frozen=True)
class Sample:
    """One file of the ImageFolder: its path relative to the root, and its class."""

    path: str
    label: str


def list_preview(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c (and 7 more)``: the first ``limit`` items and a count of the rest."""
    head = ", ".join(items[:limit])
    return head + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def _visible(name: str) -> bool:
    return not name.startswith(".")


def scan_image_folder(root: str | Path) -> list[Sample]:
    """List the files of ImageFolder ``root`` (one sub-folder per class), sorted.

    Hidden files and folders are ignored, as torchvision's ``ImageFolder`` does; files that
    are not images are returned too, so that decoding can report them by name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder. Put an ImageFolder there (one sub-folder per class) "
            "or run `make data` for the embedded default dataset."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p.name))
    if not classes:
        raise DataError(f"{root}: no class folders found; expected one sub-folder per class")
    samples = []
    empty = []
    for label in classes:
        files = sorted(_walk_files(root / label, root))
        if not files:
            empty.append(label)
        samples.extend(Sample(path, label) for path in files)
    if empty:
        raise DataError(f"{root}: class folder(s) with no files: {list_preview(empty)}")
    return samples


def _walk_files(folder: Path, root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        for name in filenames:
            if _visible(name):
                yield Path(dirpath, name).relative_to(root).as_posix()


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes into a ``(3, size, size)`` uint8 RGB array.

    The image is centre-cropped to a square and resized with bicubic antialiasing
    (``ImageOps.fit``), so non-square images keep their aspect ratio.
    """
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = _to_rgb(img)
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit and float images to 0..255."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return img.convert("RGB")


def _read_and_decode(root: Path, sample: Sample, size: int) -> tuple[np.ndarray | None, str, str]:
    """(array or None, sha1 of the bytes, error message or '')."""
    path = root / sample.path
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, "", f"{sample.path} ({err.strerror or err})"
    digest = hashlib.sha1(data).hexdigest()
    try:
        return decode_image(data, size), digest, ""
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return None, digest, f"{sample.path} ({type(err).__name__}: {err})"


def build_cache(
    root: str | Path, samples: Sequence[Sample], size: int, out: str | Path, on_invalid: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """Decode ``samples`` once into the ``.npy`` cache at ``out``; return their table and the bad files.

    Rows are streamed to disk as they are decoded, so memory stays flat whatever the dataset's
    size. With ``on_invalid="error"`` an unreadable file raises :class:`DataError` listing them
    all; with ``"skip"`` they are left out and returned.
    """
    root, out = Path(root), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, bad = [], []
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".raw") as raw:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            results = pool.map(lambda s: _read_and_decode(root, s, size), samples)
            for sample, (arr, digest, error) in zip(
                samples, tqdm(results, total=len(samples), desc="prepare: decoding", unit="img"), strict=True
            ):
                if arr is None:
                    bad.append(error)
                    continue
                raw.write(arr.tobytes())
                rows.append({"path": sample.path, "class": sample.label, "sha1": digest})
        if bad and on_invalid == "error":
            raise DataError(
                f"{root}: {len(bad)} file(s) could not be read as images: {list_preview(bad)}. "
                "Remove them, or set data.on_invalid: skip to leave them out (the count is recorded)."
            )
        raw.flush()
        _raw_to_npy(Path(raw.name), out, (len(rows), 3, size, size))
    return pd.DataFrame(rows, columns=["path", "class", "sha1"]), bad


def _raw_to_npy(raw: Path, out: str | Path, shape: tuple[int, ...]) -> None:
    """Prefix the raw uint8 rows with an ``.npy`` header, atomically, by streaming."""
    with atomic_path(out) as tmp, open(tmp, "wb") as dst, open(raw, "rb") as src:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(dst, header)
        shutil.copyfileobj(src, dst, length=16 << 20)


def split_indices(labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Assign each item a split, stratified by label and reproducible for ``seed``.

    Every class gets at least one validation and one test image and keeps at least one for
    training; a class too small for that raises :class:`DataError` naming it.
    """
    labels = list(labels)
    splits = [""] * len(labels)
    too_small = []
    for class_index, label in enumerate(sorted(set(labels))):
        members = [i for i, lab in enumerate(labels) if lab == label]
        n = len(members)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n - n_test - n_val < 1:
            too_small.append(f"{label!r} ({n} image{'s' if n != 1 else ''})")
            continue
        order = np.random.default_rng([seed, class_index]).permutation(n)
        for rank, position in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            splits[members[position]] = split
    if too_small:
        raise DataError(
            f"class(es) with too few images to split into train/val/test: {list_preview(too_small)}; "
            "each class needs at least 3 (more with larger val/test fractions)"
        )
    return splits


def nested_train_subset(manifest: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """Boolean mask of the training rows kept at ``fraction``, stratified by class.

    For a given ``seed`` the subsets are nested: the rows kept at 10% are all kept at 25%.
    Each class keeps at least one image.
    """
    keep = pd.Series(False, index=manifest.index)
    train = manifest[manifest["split"] == "train"]
    for class_index, (_, group) in enumerate(sorted(train.groupby("class"), key=lambda kv: kv[0])):
        order = np.random.default_rng([seed, class_index, 1]).permutation(len(group))
        n_keep = max(1, math.ceil(len(group) * fraction))
        keep.loc[group.index[order[:n_keep]]] = True
    return keep


def make_manifest(table: pd.DataFrame, config: DataConfig, seed: int) -> pd.DataFrame:
    """Add the ``split`` column to a (path, class, sha1) table; apply ``data.train_fraction``."""
    manifest = table.copy()
    manifest["split"] = split_indices(manifest["class"], config.val_fraction, config.test_fraction, seed)
    if config.train_fraction < 1:
        keep = nested_train_subset(manifest, config.train_fraction, seed)
        manifest.loc[(manifest["split"] == "train") & ~keep, "split"] = UNUSED
    return manifest


def check_classes(samples: Iterable[Sample], root: str | Path) -> None:
    """At least two classes are needed to classify anything."""
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        raise DataError(f"{root}: found only one class ({classes[0]!r}); a classifier needs at least two")


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


def prepare_dataset(*, raw: Path, out: Path, params: Params, summary_path: Path) -> dict[str, Any]:
    """Scan and check ``raw``, cache it at ``data.image_size``, split it, write the manifest."""
    samples = scan_image_folder(raw)
    check_classes(samples, raw)
    log.info("found %d files in %d classes under %s", len(samples), len({s.label for s in samples}), raw)
    table, skipped = build_cache(raw, samples, params.data.image_size, out / IMAGES, params.data.on_invalid)
    check_classes([s for s in samples if s.path in set(table["path"])], raw)
    manifest = make_manifest(table, params.data, params.seed)
    with atomic_path(out / MANIFEST) as tmp:
        manifest.to_csv(tmp, index=False)
    counts = manifest.groupby(["split", "class"]).size()
    summary = {
        "images": len(manifest),
        "classes": len(counts.index.get_level_values("class").unique()),
        "skipped_files": len(skipped),
        **{f"{split}_images": int(counts.get(split, pd.Series(dtype=int)).sum()) for split in ("train", "val", "test")},
        "unused_train_images": int(counts.get("unused", pd.Series(dtype=int)).sum()),
    }
    write_json(summary_path, summary)
    for split in ("train", "val", "test"):
        log.info("%s: %s", split, {k: int(v) for k, v in counts.get(split, pd.Series(dtype=int)).items()})
    return summary
