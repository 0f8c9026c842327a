"""Every entry under a folder as ``dvc add`` sees it: hidden ones included, links not followed.

``dvc add`` stores a copy of a symlink's target wherever it points, waits forever on a named pipe,
fails on a name that is not UTF-8 (``'utf-8' codec can't encode``), stores no empty folder and no
symlinked folder, and replaces a hard link by a copy of its own. :func:`dvc_problems` lists what it
would mishandle; :mod:`tvs.data.scan` adds what ``prepare`` would refuse.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tvs.errors import list_preview


def shown(path: str) -> str:
    """``path`` printable as UTF-8: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root``, hidden ones too (``dvc add`` takes them), with its ``lstat``; links not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            try:
                yield full.relative_to(root).as_posix(), full.lstat()
            except OSError:  # vanished while walking
                continue


def _outside(root: Path, rel: str) -> str | None:
    """Where ``rel`` resolves to when that is outside ``root``, else ``None`` (``root`` itself is inside)."""
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError):  # a symlink loop: unreadable, and the decoder says so
        return None
    base = root.resolve()
    return None if target == base or base in target.parents else str(target)


def links_outside(root: str | Path, paths: Sequence[str]) -> dict[str, str]:
    """``{path: target}`` for each of ``paths`` (relative to ``root``) that resolves outside ``root``."""
    found = {rel: _outside(Path(root), rel) for rel in paths}
    return {rel: target for rel, target in found.items() if target is not None}


def tree_links_outside(root: str | Path) -> dict[str, str]:
    """``{link: target}`` for each symlink anywhere under ``root`` (hidden, stray, a folder) leading out of it."""
    found = {rel: _outside(Path(root), rel) for rel, st in entries(Path(root)) if stat.S_ISLNK(st.st_mode)}
    return {rel: target for rel, target in found.items() if target is not None}


def arrows(links: Mapping[str, str]) -> str:
    """``a -> /x, b -> /y``: links and their targets, printable, the first ten and a count."""
    return list_preview([f"{shown(rel)} -> {shown(target)}" for rel, target in sorted(links.items())])


SPECIAL_KINDS = {
    stat.S_IFIFO: "named pipe",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def special_kind(mode: int) -> str | None:
    """``"named pipe"``, ``"socket"``, ... for a file that is neither regular, a folder nor a link; else ``None``."""
    return SPECIAL_KINDS.get(stat.S_IFMT(mode))


def special_entries(root: str | Path) -> dict[str, str]:
    """``{path: "named pipe"}`` for each special file anywhere under ``root``: reading one may block forever."""
    return {rel: kind for rel, st in entries(Path(root)) if (kind := special_kind(st.st_mode))}


def special_files(root: str | Path) -> list[str]:
    """``path (named pipe)`` for each special file anywhere under ``root``."""
    return [f"{shown(rel)} ({kind})" for rel, kind in special_entries(root).items()]


def undecodable_names(paths: Sequence[str]) -> list[str]:
    """The ``paths`` that are not valid UTF-8 (Python keeps their raw bytes as surrogate escapes)."""
    bad = []
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(path)
    return bad


def names_not_utf8(root: str | Path) -> list[str]:
    """The entries under ``root`` whose own name is not UTF-8 (not each file under such a folder)."""
    return sorted(rel for rel, _ in entries(Path(root)) if undecodable_names([Path(rel).name]))


def hard_links_out(root: str | Path) -> list[str]:
    """Files under ``root`` with more hard links than names under it: they share their data with a file outside."""
    names: dict[tuple[int, int], list[str]] = defaultdict(list)
    links: dict[tuple[int, int], int] = {}
    for rel, st in entries(Path(root)):
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            names[(st.st_dev, st.st_ino)].append(rel)
            links[(st.st_dev, st.st_ino)] = st.st_nlink
    return sorted(rel for inode, rels in names.items() if links[inode] > len(rels) for rel in rels)


def dvc_problems(root: Path) -> list[str]:
    """What ``dvc add`` would mishandle under ``root``: links out of it, special files, names that are not UTF-8."""
    problems = []
    links = tree_links_outside(root)
    if links:
        problems.append(
            f"{root}: {len(links)} symlink(s) point outside the dataset folder: {arrows(links)}. `dvc add` would "
            f"store a copy of each target with the dataset (and `dvc push` upload it): copy the files you mean "
            f"into {root} instead of linking to them."
        )
    specials = special_files(root)
    if specials:
        problems.append(
            f"{root}: {len(specials)} special file(s) that `dvc add` would wait on forever or cannot store: "
            f"{list_preview(specials)}. Remove them."
        )
    bad_names = names_not_utf8(root)
    if bad_names:
        problems.append(
            f"{root}: {len(bad_names)} name(s) are not valid UTF-8, which `dvc add` cannot store (it stops with "
            f"\"'utf-8' codec can't encode\"): {list_preview([shown(p) for p in bad_names])}. Rename them."
        )
    return problems
