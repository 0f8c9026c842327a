"""Scan a raw ImageFolder and check it, before and beyond "is each file a readable image".

Missing folder or no class folders: errors at once. Empty class folders, one class only, links
that lead out of the dataset: errors, collected with every other problem the run finds, so that
one message lists them all (:func:`raise_problems`). Stray files at the top level, and hidden
files with an image extension: warned about and ignored. File names that are not UTF-8: refused,
or skipped with ``data.on_invalid: skip``. Tiny images: warned about (they are upscaled).
:func:`screen_samples` applies the policy before any image is decoded; :func:`check_decoded`
after (unreadable files, identical images under two classes).

``python -m tvs.data.scan data/raw`` checks a folder before ``dvc add`` (:func:`check_before_dvc_add`):
what ``dvc add`` would mishandle (:mod:`tvs.data.tree`) and what ``prepare`` would refuse.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
from PIL import Image

from tvs.cli import run_stage
from tvs.config import DataConfig
from tvs.data.decode import MAX_PIXELS, Sample, decoding
from tvs.data.tree import (
    arrows,
    dvc_problems,
    hard_links_out,
    links_outside,
    shown,
    special_entries,
    tree_links_outside,
    undecodable_names,
)
from tvs.errors import DataError, list_preview

log = logging.getLogger(__name__)

SKIP_HINT = "or set data.on_invalid: skip to leave them out (the count is recorded in the prepare metrics)"


def raise_problems(problems: Sequence[str]) -> None:
    """Raise one :class:`DataError` holding every problem found, one per line (the stage joins them with ' | ')."""
    if problems:
        raise DataError("\n".join(problems))


@dataclass(frozen=True)
class Listing:
    """The class folders of an ImageFolder (empty ones included), the empty ones, and the files."""

    classes: list[str]
    empty: list[str]
    samples: list[Sample]


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_image_folder(root: str | Path) -> Listing:
    """List the class folders and files of ImageFolder ``root``, sorted; only a missing or classless root raises.

    Hidden files and folders are ignored, as torchvision's ``ImageFolder`` does; files that
    are not images are listed too, so that decoding can report them by name.
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
    samples = [Sample(path, label) for label in classes for path in sorted(_walk_files(root / label, root))]
    present = {s.label for s in samples}
    return Listing(classes, [c for c in classes if c not in present], samples)


def scan_image_folder(root: str | Path) -> list[Sample]:
    """The files of ImageFolder ``root`` (one sub-folder per class), sorted; an empty class folder raises."""
    listing = list_image_folder(root)
    raise_problems(folder_problems(root, listing))
    return listing.samples


# Why an empty class folder is worth a line before `dvc add`: afterwards the folder is just gone.
DVC_DROPS_EMPTY = (
    " (DVC stores no empty folder: after `dvc add` a clone would not have them, and `prepare` would train on "
    "the other classes without a word). Add images to them, or remove them."
)


def folder_problems(root: str | Path, listing: Listing, before_dvc_add: bool = False) -> list[str]:
    """Empty class folders, and a single class folder (a classifier needs at least two)."""
    problems = []
    if listing.empty:
        why = DVC_DROPS_EMPTY if before_dvc_add else ""
        problems.append(f"{root}: class folder(s) with no files: {list_preview(listing.empty)}{why}")
    if len(listing.classes) < 2:
        problems.append(f"{root}: found only one class ({listing.classes[0]!r}); a classifier needs at least two")
    return problems


def emptied_classes(root: str | Path, screened: Screened, kept: Iterable[str]) -> list[str]:
    """A class whose files were all unreadable or left out (``kept``: the classes of the images kept).

    An error, like an empty class folder; a class refused for its links out is reported as that.
    """
    emptied = sorted(({s.label for s in screened.samples} | screened.skipped_labels) - set(kept))
    if not emptied:
        return []
    return [
        f"{root}: class folder(s) with no usable image (every file in them is unreadable or left out): "
        f"{list_preview(emptied)}. Add readable images to them, or remove the folders."
    ]


def _walk_files(folder: Path, root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        for name in filenames:
            if _visible(name):
                yield Path(dirpath, name).relative_to(root).as_posix()


def stray_files(root: str | Path) -> list[str]:
    """Visible files directly under ``root``: in no class folder, so in no class."""
    return sorted(p.name for p in Path(root).iterdir() if not p.is_dir() and not p.name.startswith("."))


def hidden_images(root: str | Path) -> list[str]:
    """Hidden files with an image extension in the class folders (``..png``): ignored like ``.DS_Store``, so named."""
    root, extensions = Path(root), tuple(Image.registered_extensions())
    found = []
    for folder in (p for p in root.iterdir() if p.is_dir() and _visible(p.name)):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if _visible(d)]
            hidden = [n for n in filenames if not _visible(n) and n.lower().endswith(extensions)]
            found += [Path(dirpath, n).relative_to(root).as_posix() for n in hidden]
    return sorted(found)


def unreadable_problem(root: str | Path, bad: Sequence[str]) -> str:
    """The message for files that could not be read as images."""
    return f"{root}: {len(bad)} file(s) could not be read as images: {list_preview(bad)}. Remove them, {SKIP_HINT}."


def cross_class_duplicates(samples: Sequence[Sample], keys: Mapping[str, str]) -> list[list[str]]:
    """Groups of files with the same ``keys`` value (identical pixels) filed under more than one class, each sorted."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if keys.get(sample.path):
            groups[keys[sample.path]].append(sample)
    return sorted(sorted(s.path for s in g) for g in groups.values() if len({s.label for s in g}) > 1)


def conflict_problem(root: str | Path, conflicts: Sequence[Sequence[str]]) -> str:
    """The message for identical images under more than one class."""
    files = sum(len(group) for group in conflicts)
    return (
        f"{root}: {files} files in {len(conflicts)} group(s) of identical images are filed under more than "
        f"one class (ambiguous labels that would also leak between splits): "
        f"{list_preview([' = '.join(shown(p) for p in group) for group in conflicts])}. "
        f"Remove the wrong copies, {SKIP_HINT}."
    )


def duplicate_counts(keys: Sequence[str]) -> tuple[int, int]:
    """(number of groups of identical images, number of images in those groups)."""
    sizes = [n for n in Counter(k for k in keys if k).values() if n > 1]
    return len(sizes), sum(sizes)


def small_images(table: pd.DataFrame, size: int) -> list[str]:
    """Paths of images whose short side is below ``size`` pixels (they get upscaled)."""
    return list(table.loc[table[["width", "height"]].min(axis=1) < size, "path"])


@dataclass(frozen=True)
class Screened:
    """What :func:`screen_samples` kept, skipped (with the reason), found lying around, and refused."""

    samples: list[Sample]
    skipped: list[str]
    stray: list[str]
    problems: list[str]
    skipped_labels: set[str]  # the classes of the skipped files


def _held(samples: Sequence[Sample]) -> set[str]:
    """The samples' paths and the folders holding them (links there are reported file by file)."""
    return {s.path for s in samples} | {str(p) for s in samples for p in PurePosixPath(s.path).parents}


def screen_samples(root: str | Path, samples: Sequence[Sample], on_invalid: str) -> Screened:
    """The checks that need no decoding, applied with the ``data.on_invalid`` policy.

    Links out of ``root`` are always a problem (and never read), wherever they are: ``dvc add``
    would store a copy of their target. With ``on_invalid="error"`` names that are not UTF-8 are
    one too; with ``"skip"`` they are left out.
    """
    root = Path(root)
    stray = stray_files(root)
    if stray:
        log.warning(
            "%s: %d file(s) at the top level are not in a class folder and are ignored: %s",
            root, len(stray), list_preview([shown(s) for s in stray]),
        )  # fmt: skip
    hidden = hidden_images(root)
    if hidden:
        log.warning(
            "%s: %d hidden file(s) with an image extension are ignored (a name starting with '.' is hidden, like "
            ".DS_Store): %s. Rename them to use them.", root, len(hidden), list_preview([shown(h) for h in hidden]),
        )  # fmt: skip
    problems = []
    outside = links_outside(root, [s.path for s in samples])
    held = _held(samples)
    others = {rel: t for rel, t in tree_links_outside(root).items() if rel not in held}
    if outside or others:
        problems.append(
            f"{root}: {len(outside) + len(others)} file(s) are reached through symlinks that point outside the "
            f"dataset folder: {arrows({**outside, **others})}. Copy the files into {root} instead of linking to them."
        )
    bad_names = set(undecodable_names([s.path for s in samples]))
    if bad_names and on_invalid == "error":
        problems.append(
            f"{root}: {len(bad_names)} file name(s) are not valid UTF-8, so the manifest cannot record them: "
            f"{list_preview(sorted(shown(p) for p in bad_names))}. Rename them, {SKIP_HINT}."
        )
    kept = [s for s in samples if s.path not in bad_names and s.path not in outside]
    skipped = [f"{shown(p)} (name is not UTF-8)" for p in sorted(bad_names)]
    return Screened(kept, skipped, stray, problems, {s.label for s in samples if s.path in bad_names})


@dataclass(frozen=True)
class Checked:
    """What :func:`check_decoded` kept (the rows, and their mask), the copies in conflict, and the problems."""

    kept: pd.DataFrame
    keep: pd.Series
    in_conflict: set[str]
    problems: list[str]


def check_decoded(
    root: str | Path, screened: Screened, table: pd.DataFrame, bad: Sequence[str], on_invalid: str
) -> Checked:
    """The checks that need the pixels, with the ``data.on_invalid`` policy.

    Unreadable files, identical images filed under two classes (both refused with ``"error"``, left
    out with ``"skip"``), and classes left with no usable image (always refused). ``table`` is the
    decoded files' table (:func:`tvs.data.decode.decoding`), ``bad`` the files that were not.
    """
    problems = []
    if bad and on_invalid == "error":
        problems.append(unreadable_problem(root, bad))
    # Identical pixels at the cached size, not identical bytes: a copy re-saved at another
    # compression level or in another lossless format is the same image to the model.
    conflicts = cross_class_duplicates(
        [Sample(p, c) for p, c in zip(table["path"], table["class"], strict=True)],
        dict(zip(table["path"], table["pixels"], strict=True)),
    )
    if conflicts and on_invalid == "error":  # the user removes the wrong copies: keep all to check the rest
        problems.append(conflict_problem(root, conflicts))
    in_conflict = {path for group in conflicts for path in group} if on_invalid == "skip" else set()
    keep = ~table["path"].isin(in_conflict)
    kept = table[keep].reset_index(drop=True)
    problems += emptied_classes(root, screened, kept["class"])
    return Checked(kept, keep, in_conflict, problems)


def check_before_dvc_add(root: str | Path, size: int = DataConfig.image_size, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse what ``dvc add`` would mishandle and what ``prepare`` would refuse, before anything is added.

    ``dvc add`` stores a copy of a symlink's target wherever it points (and ``dvc push`` uploads it),
    waits forever on a named pipe, fails on a name that is not UTF-8, and drops an empty class folder
    without a word. ``prepare`` refuses unreadable files (truncated, not an image, over ``max_pixels``)
    and identical images under two classes (found at ``size`` pixels, ``data.image_size``); every file
    is decoded once here. Whether each class is large enough for ``data.val_fraction`` and
    ``data.test_fraction`` is left to ``prepare``, which reads the params. Files hard-linked from
    outside the folder are warned about: ``dvc add`` stores a copy of each and the link is not kept.

    Raises:
        DataError: listing every problem found, one per line.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    problems = dvc_problems(root)
    try:
        listing = list_image_folder(root)
    except DataError as err:  # no class folders: nothing more to check
        raise DataError("\n".join([*problems, str(err)])) from None
    problems += folder_problems(root, listing, before_dvc_add=True)
    screened = screen_samples(root, listing.samples, "error")  # its link and name problems are dvc_problems'
    specials = special_entries(root)  # already listed by dvc_problems
    regular = [s for s in screened.samples if s.path not in specials]
    with decoding(root, regular, size, None, max_pixels) as decoded:
        problems += check_decoded(root, screened, decoded.table, decoded.bad, "error").problems
    linked = hard_links_out(root)
    if linked:
        log.warning(
            "%s: %d file(s) are hard links to files outside it: %s. `dvc add` stores a copy of each with the "
            "dataset, and the link is not kept (the file outside no longer changes with it).",
            root, len(linked), list_preview([shown(p) for p in linked]),
        )  # fmt: skip
    raise_problems(problems)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Check a folder before `dvc add`: what `dvc add` would mishandle and what `prepare` would refuse."
    )
    parser.add_argument("root", type=Path, help="the folder you are about to `dvc add` (e.g. data/raw)")
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse images over this many pixels ({MAX_PIXELS})"
    )
    args = parser.parse_args()
    check_before_dvc_add(args.root, max_pixels=args.max_pixels)
    log.info("%s: every image readable, nothing `dvc add` would mishandle; safe to `dvc add`", args.root)


if __name__ == "__main__":
    run_stage("check", main)
