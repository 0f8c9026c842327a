"""Scan a raw ImageFolder and check it, before and beyond "is each file a readable image".

Missing folder or no class folders: errors at once. Empty class folders, one class only, links
that lead out of the dataset: errors, collected with every other problem the run finds, so that
one message lists them all (:func:`raise_problems`). Stray files at the top level: warned about
and ignored. File names that are not UTF-8: refused, or skipped with ``data.on_invalid: skip``.
Tiny images: warned about (they are upscaled). :func:`screen_samples` applies the policy before
any image is decoded; decoding errors and duplicate images are found by :mod:`tvs.data.prepare`.

``python -m tvs.data.scan data/raw`` checks a folder before ``dvc add`` (:func:`check_before_dvc_add`).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from tvs.cli import run_stage
from tvs.errors import DataError, list_preview

log = logging.getLogger(__name__)

SKIP_HINT = "or set data.on_invalid: skip to leave them out (the count is recorded in the prepare metrics)"


def shown(path: str) -> str:
    """``path`` printable as UTF-8: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def raise_problems(problems: Sequence[str]) -> None:
    """Raise one :class:`DataError` holding every problem found, one per line (the stage joins them with ' | ')."""
    if problems:
        raise DataError("\n".join(problems))


@dataclass(frozen=True)
class Sample:
    """One file of the ImageFolder: its path relative to the root, and its class."""

    path: str
    label: str


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


def folder_problems(root: str | Path, listing: Listing) -> list[str]:
    """Empty class folders, and a single class folder (a classifier needs at least two)."""
    problems = []
    if listing.empty:
        problems.append(f"{root}: class folder(s) with no files: {list_preview(listing.empty)}")
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


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root``, hidden ones too (``dvc add`` takes them), with its ``lstat``; links not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            try:
                yield full.relative_to(root).as_posix(), full.lstat()
            except OSError:  # vanished while walking
                continue


def _outside(root: Path, rel: str) -> str | None:
    """Where ``rel`` resolves to when that is outside ``root``, else ``None``."""
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError):  # a symlink loop: unreadable, and the decoder says so
        return None
    return None if root.resolve() in target.parents else str(target)


def links_outside(root: str | Path, paths: Sequence[str]) -> dict[str, str]:
    """``{path: target}`` for each of ``paths`` (relative to ``root``) that resolves outside ``root``."""
    found = {rel: _outside(Path(root), rel) for rel in paths}
    return {rel: target for rel, target in found.items() if target is not None}


def tree_links_outside(root: str | Path) -> dict[str, str]:
    """``{link: target}`` for each symlink anywhere under ``root`` (hidden, stray, a folder) leading out of it."""
    found = {rel: _outside(Path(root), rel) for rel, st in _entries(Path(root)) if stat.S_ISLNK(st.st_mode)}
    return {rel: target for rel, target in found.items() if target is not None}


SPECIAL_KINDS = {
    stat.S_IFIFO: "named pipe",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def special_kind(mode: int) -> str | None:
    """``"named pipe"``, ``"socket"``, ... for a file that is neither regular, a folder nor a link; else ``None``."""
    return SPECIAL_KINDS.get(stat.S_IFMT(mode))


def special_files(root: str | Path) -> list[str]:
    """``path (named pipe)`` for each special file anywhere under ``root``: reading one may block forever."""
    return [f"{shown(rel)} ({kind})" for rel, st in _entries(Path(root)) if (kind := special_kind(st.st_mode))]


def check_before_dvc_add(root: str | Path) -> None:
    """Refuse what ``dvc add`` would mishandle: links out of ``root`` and special files.

    ``dvc add`` replaces a symlink with a copy of its target, wherever it points, so that file is
    cached and pushed with the dataset; and it waits forever on a named pipe.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    problems = []
    links = tree_links_outside(root)
    if links:
        problems.append(
            f"{root}: {len(links)} symlink(s) point outside the dataset folder: {_arrows(links)}. `dvc add` would "
            f"store a copy of each target with the dataset (and `dvc push` upload it): copy the files you mean "
            f"into {root} instead of linking to them."
        )
    specials = special_files(root)
    if specials:
        problems.append(
            f"{root}: {len(specials)} special file(s) that `dvc add` would wait on forever or cannot store: "
            f"{list_preview(specials)}. Remove them."
        )
    raise_problems(problems)


def _arrows(links: Mapping[str, str]) -> str:
    return list_preview([f"{shown(rel)} -> {shown(target)}" for rel, target in sorted(links.items())])


def stray_files(root: str | Path) -> list[str]:
    """Visible files directly under ``root``: in no class folder, so in no class."""
    return sorted(p.name for p in Path(root).iterdir() if not p.is_dir() and not p.name.startswith("."))


def undecodable_names(paths: Sequence[str]) -> list[str]:
    """The ``paths`` that are not valid UTF-8 (Python keeps their raw bytes as surrogate escapes)."""
    bad = []
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(path)
    return bad


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
    problems = []
    outside = links_outside(root, [s.path for s in samples])
    held = _held(samples)
    others = {rel: t for rel, t in tree_links_outside(root).items() if rel not in held}
    if outside or others:
        problems.append(
            f"{root}: {len(outside) + len(others)} file(s) are reached through symlinks that point outside the "
            f"dataset folder: {_arrows({**outside, **others})}. Copy the files into {root} instead of linking to them."
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Check a folder before `dvc add`: no links out of it, no special files."
    )
    parser.add_argument("root", type=Path, help="the folder you are about to `dvc add` (e.g. data/raw)")
    root = parser.parse_args().root
    check_before_dvc_add(root)
    log.info("%s: no symlinks out of it and no special files; safe to `dvc add`", root)


if __name__ == "__main__":
    run_stage("check", main)
