"""Decode the files of an ImageFolder into uint8 pixels, with the memory each one may take bounded before decoding.

A file is opened without blocking (a named pipe is refused by its type, not waited on). A PNG's
chunks are checked from their 8-byte headers before Pillow opens it, since Pillow reads every
chunk before the image data whole while opening. Then an image is refused by its width times
height, read from its header, before a pixel is decoded (``max_pixels``, default
:data:`MAX_PIXELS`; Pillow's own bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS`` or 89 megapixels,
applies on top). The folder's images are decoded in four threads (:func:`decoding`).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from tqdm import tqdm

from tvs.data.tree import shown, special_kind
from tvs.io import atomic_path, disk_full_names

# The most pixels (width x height) an image may have; ``data.max_pixels`` sets it. 50 megapixels
# takes the largest photos expected (8660x5773, a 50 MP camera) and refuses what would cost more
# memory than a photo: decoding peaks near 20 bytes a pixel (a 16-bit greyscale image is scaled in
# float64), about 1 GB per image at this bound, in each of the four decoding threads.
MAX_PIXELS = 50_000_000

# The most bytes of PNG chunks other than image data (text, ICC profile, EXIF, unknown ones) a file
# may hold: Pillow's own bound on the text it keeps (PngImagePlugin.MAX_TEXT_MEMORY, 64 MiB), which
# it checks only after reading a chunk whole; here it is checked from the chunk headers.
MAX_METADATA_BYTES = PngImagePlugin.MAX_TEXT_MEMORY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IMAGE_DATA = (b"IDAT", b"fdAT")  # streamed by the decoder, bounded by the pixels


COLUMNS = ["path", "class", "sha1", "pixels", "width", "height"]


@dataclass(frozen=True)
class Sample:
    """One file of the ImageFolder: its path relative to the root, and its class."""

    path: str
    label: str


class TooLarge(ValueError):
    """An image whose pixels or metadata exceed a bound; refused before it is decoded."""


def png_metadata_bytes(handle: IO[bytes]) -> tuple[int, list[str]]:
    """Bytes of a PNG's chunks other than image data, and their types; ``(0, [])`` for a file that is no PNG.

    Only the 8-byte chunk headers are read, the data is skipped with ``seek``: Python's ``struct``,
    because Pillow's chunk reader is the one that reads each chunk whole.
    """
    handle.seek(0)
    if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
        handle.seek(0)
        return 0, []
    total, kinds = 0, []
    while len(header := handle.read(8)) == 8:
        length, kind = struct.unpack(">I4s", header)
        if kind not in PNG_IMAGE_DATA:
            total += length
            kinds.append(kind.decode("latin-1"))
        if kind == b"IEND":
            break
        handle.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    handle.seek(0)
    return total, kinds


def check_metadata(source: IO[bytes]) -> None:
    """Refuse a PNG holding more than :data:`MAX_METADATA_BYTES` of metadata, from its chunk headers.

    Raises:
        TooLarge: naming the size and the chunk types.
    """
    total, kinds = png_metadata_bytes(source)
    if total > MAX_METADATA_BYTES:
        big = ", ".join(sorted(set(kinds) - {"IHDR", "IEND"}) or kinds)
        raise TooLarge(
            f"{total / 2**20:.1f} MiB of PNG metadata ({big} chunks), over the limit of {MAX_METADATA_BYTES >> 20} MiB "
            "(PIL.PngImagePlugin.MAX_TEXT_MEMORY)"
        )


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    """Refuse ``img`` by its header's width x height: over Pillow's bomb limit, or over ``max_pixels``."""
    pixels, limit = img.width * img.height, Image.MAX_IMAGE_PIXELS
    if limit and pixels > limit:  # Pillow refuses over 2x its limit when opening, and only warns below
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} = {pixels} pixels, over the decompression-bomb limit of {limit} "
            "(PIL.Image.MAX_IMAGE_PIXELS)"
        )
    if pixels > max_pixels:
        raise TooLarge(f"{img.width}x{img.height} = {pixels} pixels, over the limit of {max_pixels} (data.max_pixels)")


def decode(source: IO[bytes], size: int, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an open image file into a ``(3, size, size)`` uint8 RGB array, and its original (width, height).

    The image is turned upright by its EXIF orientation (phone photos), centre-cropped to a
    square and resized with bicubic antialiasing (``ImageOps.fit``), so non-square images keep
    their aspect ratio. Pillow identifies the format from the header, so a file that is no image
    is refused without being read whole; an image over ``max_pixels`` pixels, or a PNG with
    oversized metadata, is refused before its pixels are decoded.

    Raises:
        TooLarge: over ``max_pixels`` or :data:`MAX_METADATA_BYTES`.
        PIL.Image.DecompressionBombError: over ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    check_metadata(source)
    with Image.open(source) as img:
        _check_pixels(img, max_pixels)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        original = img.size
        img = _to_rgb(img)
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), original


def decode_image(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into a ``(3, size, size)`` uint8 RGB array (see :func:`decode`)."""
    return decode(io.BytesIO(data), size, max_pixels)[0]


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


def read_and_decode(root: Path, sample: Sample, size: int, max_pixels: int = MAX_PIXELS) -> Decoded:
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
            arr, original = decode(handle, size, max_pixels)
        except (Image.DecompressionBombError, TooLarge) as err:
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
    raw: Path | None  # None: the pixels were checked, not kept
    shape: tuple[int, int, int]

    def save(self, out: str | Path, rows: Sequence[int] | None = None) -> None:
        """Write ``rows`` (default: all) of the raw file as an ``.npy`` at ``out``, atomically, by streaming."""
        if self.raw is None:
            raise ValueError("these images were decoded to be checked, not kept: pass a folder to decoding()")
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
def decoding(
    root: str | Path, samples: Sequence[Sample], size: int, folder: str | Path | None, max_pixels: int = MAX_PIXELS
) -> Iterator[DecodedFolder]:
    """Decode ``samples`` once, in four threads, into a temporary raw file in ``folder``, removed on exit.

    Rows are streamed to disk as they are decoded, so memory stays flat whatever the dataset's size.
    With ``folder=None`` the pixels are only checked and hashed, not kept. A full disk raises an
    ``OSError`` naming ``folder`` (the raw file is a temporary that the user never sees).
    """
    with _raw_file(folder) as sink:
        with disk_full_names(folder) if folder is not None else nullcontext():
            table, bad = _decode_all(Path(root), samples, size, max_pixels, sink)
        yield DecodedFolder(table, bad, Path(sink.name) if sink else None, (3, size, size))


@contextmanager
def _raw_file(folder: str | Path | None) -> Iterator[IO[bytes] | None]:
    """A temporary file in ``folder`` for the decoded rows, removed on exit; ``None`` without a folder."""
    if folder is None:
        yield None
        return
    with ExitStack() as stack:
        with disk_full_names(folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            raw = stack.enter_context(tempfile.NamedTemporaryFile(dir=folder, prefix=".images.", suffix=".raw"))
        yield raw


def _decode_all(
    root: Path, samples: Sequence[Sample], size: int, max_pixels: int, sink: IO[bytes] | None
) -> tuple[pd.DataFrame, list[str]]:
    """Decode ``samples`` in four threads, writing each image's pixels to ``sink``; their table and the bad files."""
    rows, bad = [], []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda s: read_and_decode(root, s, size, max_pixels), samples)
        progress = tqdm(results, total=len(samples), desc="decoding", unit="img", disable=None)
        for sample, done in zip(samples, progress, strict=True):
            if done.array is None:
                bad.append(done.error)
                continue
            if sink is not None:
                sink.write(done.array.tobytes())
            rows.append([sample.path, sample.label, done.sha1, done.pixels, *done.size])
    if sink is not None:
        sink.flush()
    return pd.DataFrame(rows, columns=COLUMNS), bad
