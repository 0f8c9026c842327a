"""The ``prepare`` stage's work: check an ImageFolder, decode it once into a uint8 cache, split it.

Training and evaluation read the cache (``images.npy``, memory-mapped) and the manifest
(``manifest.csv``: path, class, sha1, split) through :mod:`tvs.data.prepared`. Scanning the
folder and the checks that need no decoding (stray files, links, names, duplicates) live in
:mod:`tvs.data.scan`; the splits in :mod:`tvs.data.split`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from tvs.config import Params
from tvs.data.prepared import IMAGES, MANIFEST, SPLITS
from tvs.data.scan import (
    SKIP_HINT,
    Sample,
    check_classes,
    duplicate_counts,
    scan_image_folder,
    screen_samples,
    shown,
    small_images,
)
from tvs.data.split import make_manifest
from tvs.errors import DataError, list_preview
from tvs.io import atomic_path, write_json

log = logging.getLogger(__name__)


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
    }
    write_json(summary_path, summary)
    for split in SPLITS:
        log.info("%s: %s", split, {k: int(v) for k, v in counts.get(split, pd.Series(dtype=int)).items()})
    return summary
