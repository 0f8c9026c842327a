"""The ``prepare`` stage's work: check an ImageFolder, decode it once into a uint8 cache, split it.

Training and evaluation read the cache (``images.npy``, memory-mapped) and the manifest
(``manifest.csv``: path, class, sha1, split) through :mod:`tvs.data.prepared`. Scanning the
folder and its checks (stray files, links, names, then unreadable files and duplicates) live in
:mod:`tvs.data.scan`; decoding, bounded per image, in :mod:`tvs.data.decode`; the splits in
:mod:`tvs.data.split`. Every problem found is reported
in one message at the end, so a user learns of all of them from one run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tvs.config import Params
from tvs.data.decode import MAX_PIXELS, Sample, decoding
from tvs.data.decode import decode_image as decode_image  # re-exported: the tests compare the cache with it
from tvs.data.prepared import IMAGES, MANIFEST, SPLITS
from tvs.data.scan import (
    check_decoded,
    duplicate_counts,
    folder_problems,
    list_image_folder,
    raise_problems,
    screen_samples,
    shown,
    small_images,
    unreadable_problem,
)
from tvs.data.split import make_manifest
from tvs.errors import DataError, list_preview
from tvs.io import write_csv, write_json

log = logging.getLogger(__name__)


def build_cache(
    root: str | Path,
    samples: Sequence[Sample],
    size: int,
    out: str | Path,
    on_invalid: str = "error",
    max_pixels: int = MAX_PIXELS,
) -> tuple[pd.DataFrame, list[str]]:
    """Decode ``samples`` once into the ``.npy`` cache at ``out``; return their table and the bad files.

    The table has columns path, class, sha1 (of the file), pixels (sha1 of the decoded array)
    and the original width and height. With ``on_invalid="error"`` an unreadable file raises
    :class:`DataError` listing them all, and nothing is written; with ``"skip"`` they are left
    out and returned. An image over ``max_pixels`` pixels is unreadable, refused before decoding.
    """
    with decoding(root, samples, size, Path(out).parent, max_pixels) as decoded:
        if decoded.bad and on_invalid == "error":
            raise DataError(unreadable_problem(root, decoded.bad))
        decoded.save(out)
    return decoded.table, decoded.bad


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Write ``manifest.csv`` atomically so that every name reads back as it was (:func:`tvs.io.write_csv`)."""
    write_csv(manifest, path)


def prepare_dataset(
    *, raw: Path, out: Path, params: Params, summary_path: Path, max_pixels: int = MAX_PIXELS
) -> dict[str, Any]:
    """Scan and check ``raw``, cache it at ``data.image_size``, split it, write the manifest.

    ``max_pixels`` bounds each image's width x height, checked from its header before it is
    decoded (:data:`tvs.data.decode.MAX_PIXELS`, 50 megapixels, by default).

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
    with decoding(raw, screened.samples, size, out, max_pixels) as decoded:
        checked = check_decoded(raw, screened, decoded.table, decoded.bad, on_invalid)
        problems += checked.problems
        kept = checked.kept
        try:
            manifest = make_manifest(kept[["path", "class", "sha1"]], params.data, params.seed, groups=kept["pixels"])
        except DataError as err:  # a class too small to split
            problems.append(str(err))
        raise_problems(problems)
        decoded.save(out / IMAGES, rows=np.flatnonzero(checked.keep))
    conflicting = [f"{shown(p)} (identical image under another class)" for p in sorted(checked.in_conflict)]
    skipped = screened.skipped + decoded.bad + conflicting
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
