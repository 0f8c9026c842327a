"""Decode a checked ImageFolder, split it, and cache it as resized uint8 tensors.

``prepare`` decodes every image exactly once, here. Training and evaluation read the cache
(``images.npy``, memory-mapped) and the manifest (``manifest.csv``: path, class, sha1, split),
whose rows are aligned: manifest row *i* is cache row *i*. Scanning the folder and the checks
that need no decoding (stray files, links, names, duplicates) live in :mod:`tvs.checks`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from tvs.checks import (
    SKIP_HINT,
    DataError,
    Sample,
    check_classes,
    duplicate_counts,
    list_preview,
    scan_image_folder,
    screen_samples,
    shown,
    small_images,
)
from tvs.config import DataConfig, Params
from tvs.io import atomic_path, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNUSED = "unused"  # training images left out by data.train_fraction
MANIFEST = "manifest.csv"
IMAGES = "images.npy"
# Re-exported: defined in tvs.checks, long imported from here.
__all__ = ["DataError", "Sample", "check_classes", "list_preview", "scan_image_folder"]


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes into a ``(3, size, size)`` uint8 RGB array.

    The image is centre-cropped to a square and resized with bicubic antialiasing
    (``ImageOps.fit``), so non-square images keep their aspect ratio.
    """
    return _decode(data, size)[0]


def _decode(data: bytes, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image` and the image's original (width, height)."""
    with Image.open(io.BytesIO(data)) as img:  # Pillow refuses over 2x MAX_IMAGE_PIXELS here
        pixels, limit = img.width * img.height, Image.MAX_IMAGE_PIXELS
        if limit and pixels > limit:  # between 1x and 2x Pillow only warns: refuse before decoding
            raise Image.DecompressionBombError(
                f"{img.width}x{img.height} = {pixels} pixels, over the decompression-bomb limit of {limit} "
                "(PIL.Image.MAX_IMAGE_PIXELS)"
            )
        img.load()
        original = img.size
        img = _to_rgb(img)
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), original


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit and float images to 0..255."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return img.convert("RGB")


def _read_and_decode(root: Path, sample: Sample, size: int) -> tuple[np.ndarray | None, str, str, tuple[int, int]]:
    """(array or None, sha1 of the bytes, error message or '', original width and height)."""
    path = root / sample.path
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, "", f"{shown(sample.path)} ({err.strerror or err})", (0, 0)
    digest = hashlib.sha1(data).hexdigest()
    try:
        arr, original = _decode(data, size)
    except Image.DecompressionBombError as err:
        return None, digest, f"{shown(sample.path)} (too large: {err})", (0, 0)
    except UnidentifiedImageError:  # Pillow's message only names an in-memory buffer
        return None, digest, f"{shown(sample.path)} (not an image format Pillow can read)", (0, 0)
    except (OSError, ValueError) as err:
        return None, digest, f"{shown(sample.path)} ({type(err).__name__}: {err})", (0, 0)
    return arr, digest, "", original


def build_cache(
    root: str | Path, samples: Sequence[Sample], size: int, out: str | Path, on_invalid: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """Decode ``samples`` once into the ``.npy`` cache at ``out``; return their table and the bad files.

    The table has columns path, class, sha1 and the original width and height. Rows are
    streamed to disk as they are decoded, so memory stays flat whatever the dataset's size. With
    ``on_invalid="error"`` an unreadable file raises :class:`DataError` listing them all; with
    ``"skip"`` they are left out and returned.
    """
    root, out = Path(root), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, bad = [], []
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".raw") as raw:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            results = pool.map(lambda s: _read_and_decode(root, s, size), samples)
            for sample, (arr, digest, error, (width, height)) in zip(
                samples, tqdm(results, total=len(samples), desc="prepare: decoding", unit="img"), strict=True
            ):
                if arr is None:
                    bad.append(error)
                    continue
                raw.write(arr.tobytes())
                rows.append(
                    {"path": sample.path, "class": sample.label, "sha1": digest, "width": width, "height": height}
                )
        if bad and on_invalid == "error":
            raise DataError(
                f"{root}: {len(bad)} file(s) could not be read as images: {list_preview(bad)}. "
                f"Remove them, {SKIP_HINT}."
            )
        raw.flush()
        _raw_to_npy(Path(raw.name), out, (len(rows), 3, size, size))
    return pd.DataFrame(rows, columns=["path", "class", "sha1", "width", "height"]), bad


def _raw_to_npy(raw: Path, out: str | Path, shape: tuple[int, ...]) -> None:
    """Prefix the raw uint8 rows with an ``.npy`` header, atomically, by streaming."""
    with atomic_path(out) as tmp, open(tmp, "wb") as dst, open(raw, "rb") as src:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(dst, header)
        shutil.copyfileobj(src, dst, length=16 << 20)


def split_indices(
    labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int, groups: Sequence[str] | None = None
) -> list[str]:
    """Assign each item a split, stratified by label and reproducible for ``seed``.

    Every class gets at least one validation and one test image and keeps at least one for
    training; a class too small for that raises :class:`DataError` naming it. Items sharing a
    non-empty ``groups`` value (identical images: their sha1) always land in the same split, so
    a duplicate cannot leak from training into validation or test.
    """
    labels = list(labels)
    keys = [g or f"#{i}" for i, g in enumerate(groups)] if groups is not None else [f"#{i}" for i in range(len(labels))]
    splits = [""] * len(labels)
    too_small = []
    for class_index, label in enumerate(sorted(set(labels))):
        units: dict[str, list[int]] = defaultdict(list)  # distinct images -> their copies, in file order
        for i, lab in enumerate(labels):
            if lab == label:
                units[keys[i]].append(i)
        n = sum(len(copies) for copies in units.values())
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n - n_test - n_val < 1:
            too_small.append(f"{label!r} ({n} image{'s' if n != 1 else ''})")
            continue
        # Without duplicates every unit is one image and this is a plain seeded permutation.
        placed, copies_of = 0, list(units.values())
        for position in np.random.default_rng([seed, class_index]).permutation(len(copies_of)):
            split = "test" if placed < n_test else "val" if placed < n_test + n_val else "train"
            for i in copies_of[position]:
                splits[i] = split
            placed += len(copies_of[position])
        if {splits[i] for copies in copies_of for i in copies} != set(SPLITS):
            too_small.append(f"{label!r} ({n} images but only {len(units)} distinct)")
    if too_small:
        raise DataError(
            f"class(es) with too few images to split into train/val/test: {list_preview(too_small)}; "
            "each class needs at least 3 distinct images (more with larger val/test fractions)"
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
    """Add the ``split`` column to a (path, class, sha1) table; apply ``data.train_fraction``.

    Copies of one image (same sha1) share a split.
    """
    manifest = table.copy()
    manifest["split"] = split_indices(
        manifest["class"], config.val_fraction, config.test_fraction, seed, groups=manifest.get("sha1")
    )
    if config.train_fraction < 1:
        keep = nested_train_subset(manifest, config.train_fraction, seed)
        manifest.loc[(manifest["split"] == "train") & ~keep, "split"] = UNUSED
    return manifest


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
    size, on_invalid = params.data.image_size, params.data.on_invalid
    scanned = scan_image_folder(raw)
    check_classes(scanned, raw)
    screened = screen_samples(raw, scanned, on_invalid)
    log.info("found %d files in %d classes under %s", len(scanned), len({s.label for s in scanned}), raw)
    table, bad = build_cache(raw, screened.samples, size, out / IMAGES, on_invalid)
    skipped = screened.skipped + bad
    if skipped:
        log.warning("%s: left out %d file(s) (data.on_invalid: skip): %s", raw, len(skipped), list_preview(skipped))
    check_classes([s for s in scanned if s.path in set(table["path"])], raw)
    upscaled = small_images(table, size)
    if upscaled:
        log.warning(
            "%d image(s) are smaller than data.image_size (%d px) on their short side and are upscaled: %s",
            len(upscaled), size, list_preview([shown(p) for p in upscaled]),
        )  # fmt: skip
    manifest = make_manifest(table.drop(columns=["width", "height"]), params.data, params.seed)
    groups, copies = duplicate_counts(manifest["sha1"])
    if groups:
        log.warning("%d group(s) of identical images (%d files): each group is kept in one split", groups, copies)
    with atomic_path(out / MANIFEST) as tmp:
        manifest.to_csv(tmp, index=False)
    counts = manifest.groupby(["split", "class"]).size()
    summary = {
        "images": len(manifest),
        "classes": len(counts.index.get_level_values("class").unique()),
        "skipped_files": len(skipped),
        "stray_files": len(screened.stray),
        "duplicate_groups": groups,
        "duplicate_images": copies,
        "upscaled_images": len(upscaled),
        **{f"{split}_images": int(counts.get(split, pd.Series(dtype=int)).sum()) for split in SPLITS},
        "unused_train_images": int(counts.get("unused", pd.Series(dtype=int)).sum()),
    }
    write_json(summary_path, summary)
    for split in SPLITS:
        log.info("%s: %s", split, {k: int(v) for k, v in counts.get(split, pd.Series(dtype=int)).items()})
    return summary
