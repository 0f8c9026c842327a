"""The ``prepare`` stage's work: check an ImageFolder, decode it once into a uint8 cache, split it.

Training and evaluation read the cache (``images.npy``, memory-mapped) and the manifest
(``manifest.csv``: path, class, sha1, split) through :mod:`tvs.data.prepared`. Scanning the
folder and the checks that need no decoding (stray files, links, names) live in
:mod:`tvs.data.scan`; the splits in :mod:`tvs.data.split`. Every problem found is reported
in one message at the end, so a user learns of all of them from one run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from tvs.config import Params
from tvs.data.prepared import IMAGES, MANIFEST, SPLITS
from tvs.data.scan import (
    SKIP_HINT,
    Sample,
    conflict_problem,
    cross_class_duplicates,
    duplicate_counts,
    emptied_classes,
    folder_problems,
    list_image_folder,
    raise_problems,
    screen_samples,
    shown,
    small_images,
    special_kind,
)
from tvs.data.split import make_manifest
from tvs.errors import DataError, list_preview
from tvs.io import atomic_path, write_json

log = logging.getLogger(__name__)

COLUMNS = ["path", "class", "sha1", "pixels", "width", "height"]


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes into a ``(3, size, size)`` uint8 RGB array.

    The image is turned upright by its EXIF orientation (phone photos), centre-cropped to a
    square and resized with bicubic antialiasing (``ImageOps.fit``), so non-square images keep
    their aspect ratio.
    """
    return _decode(io.BytesIO(data), size)[0]


def _decode(source: IO[bytes], size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image` from an open file, and the image's original (width, height).

    Pillow identifies the format from the header, so a file that is no image is refused
    without being read whole.
    """
    with Image.open(source) as img:  # Pillow refuses over 2x MAX_IMAGE_PIXELS here
        pixels, limit = img.width * img.height, Image.MAX_IMAGE_PIXELS
        if limit and pixels > limit:  # between 1x and 2x Pillow only warns: refuse before decoding
            raise Image.DecompressionBombError(
                f"{img.width}x{img.height} = {pixels} pixels, over the decompression-bomb limit of {limit} "
                "(PIL.Image.MAX_IMAGE_PIXELS)"
            )
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        original = img.size
        img = _to_rgb(img)
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), original


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit and float images to 0..255.

    Raises:
        ValueError: a float image holding NaN or infinite values (scaling it would be meaningless).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"{bad} of {arr.size} pixel values are NaN or infinite")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return img.convert("RGB")


@dataclass(frozen=True)
class Decoded:
    """One file's outcome: its pixels (or ``None`` and why not), sha1s of its bytes and pixels, original size."""

    array: np.ndarray | None
    error: str = ""
    sha1: str = ""
    pixels: str = ""
    size: tuple[int, int] = (0, 0)


def _read_and_decode(root: Path, sample: Sample, size: int) -> Decoded:
    """Open one file, refuse it by type or header, else decode it and hash its bytes and pixels."""
    name = shown(sample.path)
    try:  # O_NONBLOCK: a named pipe opens at once instead of waiting forever for a writer
        handle = os.fdopen(os.open(root / sample.path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except OSError as err:
        return Decoded(None, f"{name} ({err.strerror or err})")
    with handle:
        kind = special_kind(os.fstat(handle.fileno()).st_mode)
        if kind:
            return Decoded(None, f"{name} (a {kind}, not a regular file)")
        try:
            arr, original = _decode(handle, size)
        except Image.DecompressionBombError as err:
            return Decoded(None, f"{name} (too large: {err})")
        except UnidentifiedImageError:  # Pillow's message names only a file object
            return Decoded(None, f"{name} (not an image format Pillow can read)")
        except (OSError, ValueError) as err:
            return Decoded(None, f"{name} ({type(err).__name__}: {err})")
        handle.seek(0)
        digest = hashlib.file_digest(handle, "sha1").hexdigest()
    return Decoded(arr, "", digest, hashlib.sha1(arr.tobytes()).hexdigest(), original)


@dataclass
class DecodedFolder:
    """The decoded images, streamed to a temporary raw file: their table, the bad files, and :meth:`save`."""

    table: pd.DataFrame
    bad: list[str]
    raw: Path
    shape: tuple[int, int, int]

    def save(self, out: str | Path, rows: Sequence[int] | None = None) -> None:
        """Write ``rows`` (default: all) of the raw file as an ``.npy`` at ``out``, atomically, by streaming."""
        rows = range(len(self.table)) if rows is None else list(rows)
        row_bytes = int(np.prod(self.shape))
        with atomic_path(out) as tmp, open(tmp, "wb") as dst, open(self.raw, "rb") as src:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
            np.lib.format.write_array_header_1_0(dst, {**header, "shape": (len(rows), *self.shape)})
            if len(rows) == len(self.table):
                shutil.copyfileobj(src, dst, length=16 << 20)
                return
            for row in rows:
                src.seek(row * row_bytes)
                dst.write(src.read(row_bytes))


@contextmanager
def decoding(root: str | Path, samples: Sequence[Sample], size: int, folder: str | Path) -> Iterator[DecodedFolder]:
    """Decode ``samples`` once, in four threads, into a temporary raw file in ``folder``, removed on exit.

    Rows are streamed to disk as they are decoded, so memory stays flat whatever the dataset's size.
    """
    root = Path(root)
    Path(folder).mkdir(parents=True, exist_ok=True)
    rows, bad = [], []
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".images.", suffix=".raw") as raw:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            results = pool.map(lambda s: _read_and_decode(root, s, size), samples)
            for sample, done in zip(
                samples,
                tqdm(results, total=len(samples), desc="prepare: decoding", unit="img", disable=None),
                strict=True,
            ):
                if done.array is None:
                    bad.append(done.error)
                    continue
                raw.write(done.array.tobytes())
                rows.append([sample.path, sample.label, done.sha1, done.pixels, *done.size])
        raw.flush()
        yield DecodedFolder(pd.DataFrame(rows, columns=COLUMNS), bad, Path(raw.name), (3, size, size))


def unreadable_problem(root: str | Path, bad: Sequence[str]) -> str:
    """The message for files that could not be read as images."""
    return f"{root}: {len(bad)} file(s) could not be read as images: {list_preview(bad)}. Remove them, {SKIP_HINT}."


def build_cache(
    root: str | Path, samples: Sequence[Sample], size: int, out: str | Path, on_invalid: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """Decode ``samples`` once into the ``.npy`` cache at ``out``; return their table and the bad files.

    The table has columns path, class, sha1 (of the file), pixels (sha1 of the decoded array)
    and the original width and height. With ``on_invalid="error"`` an unreadable file raises
    :class:`DataError` listing them all, and nothing is written; with ``"skip"`` they are left
    out and returned.
    """
    with decoding(root, samples, size, Path(out).parent) as decoded:
        if decoded.bad and on_invalid == "error":
            raise DataError(unreadable_problem(root, decoded.bad))
        decoded.save(out)
    return decoded.table, decoded.bad


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Write ``manifest.csv`` atomically so that every name reads back as it was.

    Python's csv writer (pandas uses it) quotes a field holding a newline but not one holding a
    lone carriage return, which pandas' reader then takes for a line break: when any name has
    one, every field is quoted. Other manifests stay byte-identical to before.
    """
    has_cr = manifest["path"].str.contains("\r", regex=False).any()  # a class name is part of its paths
    quoting = csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False, quoting=quoting)


def prepare_dataset(*, raw: Path, out: Path, params: Params, summary_path: Path) -> dict[str, Any]:
    """Scan and check ``raw``, cache it at ``data.image_size``, split it, write the manifest.

    Raises:
        DataError: listing every problem found (one per line), after decoding every image
            once, so that one run reports them all.
    """
    size, on_invalid = params.data.image_size, params.data.on_invalid
    listing = list_image_folder(raw)
    problems = folder_problems(raw, listing)
    screened = screen_samples(raw, listing.samples, on_invalid)
    problems += screened.problems
    log.info("found %d files in %d classes under %s", len(listing.samples), len(listing.classes), raw)
    with decoding(raw, screened.samples, size, out) as decoded:
        table, bad = decoded.table, decoded.bad
        if bad and on_invalid == "error":
            problems.append(unreadable_problem(raw, bad))
        # Identical pixels at the cached size, not identical bytes: a copy re-saved at another
        # compression level or in another lossless format is the same image to the model.
        conflicts = cross_class_duplicates(
            [Sample(p, c) for p, c in zip(table["path"], table["class"], strict=True)],
            dict(zip(table["path"], table["pixels"], strict=True)),
        )
        if conflicts and on_invalid == "error":  # the user removes the wrong copies: keep all to check the rest
            problems.append(conflict_problem(raw, conflicts))
        in_conflict = {path for group in conflicts for path in group} if on_invalid == "skip" else set()
        keep = ~table["path"].isin(in_conflict)
        kept = table[keep].reset_index(drop=True)
        problems += emptied_classes(raw, screened, kept["class"])
        try:
            manifest = make_manifest(kept[["path", "class", "sha1"]], params.data, params.seed, groups=kept["pixels"])
        except DataError as err:  # a class too small to split
            problems.append(str(err))
        raise_problems(problems)
        decoded.save(out / IMAGES, rows=np.flatnonzero(keep))
    skipped = (
        screened.skipped + bad + [f"{shown(p)} (identical image under another class)" for p in sorted(in_conflict)]
    )
    if skipped:
        log.warning("%s: left out %d file(s) (data.on_invalid: skip): %s", raw, len(skipped), list_preview(skipped))
    upscaled = small_images(kept, size)
    if upscaled:
        log.warning(
            "%d image(s) are smaller than data.image_size (%d px) on their short side and are upscaled: %s",
            len(upscaled), size, list_preview([shown(p) for p in upscaled]),
        )  # fmt: skip
    groups, copies = duplicate_counts(kept["pixels"])
    if groups:
        log.warning("%d group(s) of identical images (%d files): each group is kept in one split", groups, copies)
    write_manifest(manifest, out / MANIFEST)
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
