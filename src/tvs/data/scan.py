"""Scan a raw ImageFolder and check it, before and beyond "is each file a readable image".

Missing folder, no or empty class folders, one class only: errors. Stray files at the top level:
warned about and ignored. Symlinks that lead out of the dataset: refused. File names that are not
UTF-8 and identical images under two classes: refused, or skipped with ``data.on_invalid: skip``.
Tiny images: warned about (they are upscaled). :func:`screen_samples` applies the policy before
any image is decoded; decoding errors are reported by :mod:`tvs.data.prepare`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tvs.errors import DataError, list_preview

log = logging.getLogger(__name__)

SKIP_HINT = "or set data.on_invalid: skip to leave them out (the count is recorded in the prepare metrics)"


def shown(path: str) -> str:
    """``path`` printable as UTF-8: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Sample:
    """One file of the ImageFolder: its path relative to the root, and its class."""

    path: str
    label: str


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


def check_classes(samples: Iterable[Sample], root: str | Path) -> None:
    """At least two classes are needed to classify anything."""
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        raise DataError(f"{root}: found only one class ({classes[0]!r}); a classifier needs at least two")


def stray_files(root: str | Path) -> list[str]:
    """Visible files directly under ``root``: in no class folder, so in no class."""
    return sorted(p.name for p in Path(root).iterdir() if not p.is_dir() and not p.name.startswith("."))


def links_outside(root: str | Path, paths: Sequence[str]) -> list[str]:
    """``path -> target`` for each of ``paths`` (relative to ``root``) that resolves outside ``root``."""
    base = Path(root).resolve()
    found = []
    for rel in paths:
        try:
            target = (Path(root) / rel).resolve()
        except (OSError, RuntimeError):  # a symlink loop: unreadable, and the decoder says so
            continue
        if base not in target.parents:
            found.append(f"{shown(rel)} -> {shown(str(target))}")
    return found


def undecodable_names(paths: Sequence[str]) -> list[str]:
    """The ``paths`` that are not valid UTF-8 (Python keeps their raw bytes as surrogate escapes)."""
    bad = []
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(path)
    return bad


def file_digests(root: str | Path, paths: Sequence[str]) -> dict[str, str]:
    """sha1 of each file's bytes; ``""`` for a file that cannot be read (the decoder reports it)."""

    def digest(rel: str) -> str:
        try:
            with open(Path(root) / rel, "rb") as handle:
                return hashlib.file_digest(handle, "sha1").hexdigest()
        except OSError:
            return ""

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip(paths, pool.map(digest, paths), strict=True))


def cross_class_duplicates(samples: Sequence[Sample], digests: dict[str, str]) -> list[list[str]]:
    """Groups of files with identical bytes filed under more than one class, each sorted."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if digests.get(sample.path):
            groups[digests[sample.path]].append(sample)
    return sorted(sorted(s.path for s in g) for g in groups.values() if len({s.label for s in g}) > 1)


def duplicate_counts(digests: Sequence[str]) -> tuple[int, int]:
    """(number of groups of identical files, number of files in those groups)."""
    sizes = [n for n in Counter(d for d in digests if d).values() if n > 1]
    return len(sizes), sum(sizes)


def small_images(table: pd.DataFrame, size: int) -> list[str]:
    """Paths of images whose short side is below ``size`` pixels (they get upscaled)."""
    return list(table.loc[table[["width", "height"]].min(axis=1) < size, "path"])


@dataclass(frozen=True)
class Screened:
    """What :func:`screen_samples` kept, skipped (with the reason) and found lying around."""

    samples: list[Sample]
    skipped: list[str]
    stray: list[str]


def screen_samples(root: str | Path, samples: Sequence[Sample], on_invalid: str) -> Screened:
    """The checks that need no decoding, applied with the ``data.on_invalid`` policy.

    Raises:
        DataError: for links out of ``root`` (always), and with ``on_invalid="error"`` for
            names that are not UTF-8 and for identical images under different classes.
    """
    root = Path(root)
    stray = stray_files(root)
    if stray:
        log.warning(
            "%s: %d file(s) at the top level are not in a class folder and are ignored: %s",
            root, len(stray), list_preview([shown(s) for s in stray]),
        )  # fmt: skip
    outside = links_outside(root, [s.path for s in samples])
    if outside:
        raise DataError(
            f"{root}: {len(outside)} file(s) are reached through symlinks that point outside the dataset folder: "
            f"{list_preview(outside)}. Copy the files into {root} instead of linking to them."
        )
    bad_names = set(undecodable_names([s.path for s in samples]))
    if bad_names and on_invalid == "error":
        raise DataError(
            f"{root}: {len(bad_names)} file name(s) are not valid UTF-8, so the manifest cannot record them: "
            f"{list_preview(sorted(shown(p) for p in bad_names))}. Rename them, {SKIP_HINT}."
        )
    kept = [s for s in samples if s.path not in bad_names]
    skipped = [f"{shown(p)} (name is not UTF-8)" for p in sorted(bad_names)]
    conflicts = cross_class_duplicates(kept, file_digests(root, [s.path for s in kept]))
    if conflicts and on_invalid == "error":
        files = sum(len(group) for group in conflicts)
        raise DataError(
            f"{root}: {files} files in {len(conflicts)} group(s) of identical images are filed under more than "
            f"one class (ambiguous labels that would also leak between splits): "
            f"{list_preview([' = '.join(group) for group in conflicts])}. Remove the wrong copies, {SKIP_HINT}."
        )
    in_conflict = {path for group in conflicts for path in group}
    skipped += [f"{p} (identical image under another class)" for p in sorted(in_conflict)]
    return Screened([s for s in kept if s.path not in in_conflict], skipped, stray)
