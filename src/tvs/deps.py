"""The package modules a piece of code imports, read from the source (no import is executed).

``dvc.yaml`` declares each stage's code; :func:`import_closure` is what that declaration must
equal (``tests/test_dvc_deps.py`` holds the two together), and training's resume fingerprint
hashes the same set, so the list of a stage's code is never written by hand.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "tvs"
SRC = Path(__file__).resolve().parents[1]  # the folder holding the package: src/


def module_file(module: str, src: Path = SRC) -> Path | None:
    """``tvs.data.split`` -> ``src/tvs/data/split.py`` (or the package's ``__init__.py``); ``None`` if absent."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path, src: Path) -> set[str]:
    """The package modules ``path`` imports, at any depth of its code (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from tvs.data import split` imports the module tvs.data.split
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m, src) is not None}


def _with_parents(module: str) -> list[str]:
    """``tvs.data.split`` -> ``tvs``, ``tvs.data``, ``tvs.data.split``: importing runs every ``__init__``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(files: Iterable[Path], src: Path = SRC) -> set[Path]:
    """Every package file that ``files`` import, directly or through each other (``files`` not included)."""
    seen: set[Path] = set()
    todo = [m for f in files for m in _imported(Path(f), src)]
    while todo:
        for name in _with_parents(todo.pop()):
            path = module_file(name, src)
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imported(path, src))
    return seen


def stage_code(script: Path, src: Path = SRC) -> list[Path]:
    """A stage script and every package file it imports, sorted: its code deps in ``dvc.yaml``."""
    return sorted(import_closure([script], src) | {Path(script)})
