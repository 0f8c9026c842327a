"""Each stage's code deps in the project's ``dvc.yaml`` files, written from what its script imports: ``make deps``.

A training block's code deps appear in eight stages over three pipelines (DVC can neither
interpolate a list into ``deps`` nor concatenate YAML lists, and a matrix over dict items names its
stages by index). They are never copied by hand: :func:`declare` rewrites the ``src/`` entries of
every stage whose declared files differ from :func:`~tvs.deps.stage_code`, leaving the data deps,
the comments and every agreeing stage byte for byte as they were. This module is a maintainer's
tool; no stage imports it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import yaml

from tvs.deps import SRC, stage_code

PROJECT = SRC.parent
PIPELINES = ("data/dvc.yaml", "dvc.yaml", "study/dvc.yaml", "tune/dvc.yaml")
SCRIPT = re.compile(r"(?:\.\./)*src/stages/\w+\.py")
STAGE = re.compile(r"^  ([\w-]+):")
ITEM = re.compile(r"^      - ([^#\s]+)")


def python_files(path: Path) -> set[Path]:
    """The ``.py`` files a dep names, a folder's at any depth (bytecode is in .dvcignore)."""
    return set(path.rglob("*.py")) if path.is_dir() else {path}


def entries(code: set[Path], src: Path = SRC) -> list[Path]:
    """The fewest dep paths covering exactly ``code``: a folder whose every ``.py`` file is in it, else its files.

    Sorted the way the pipelines list them: the stage script, the package's top-level modules,
    then its sub-packages.
    """
    found: list[Path] = []

    def walk(folder: Path) -> None:
        for path in sorted(folder.iterdir()):
            if path.is_dir() and path.name != "__pycache__":
                inside = python_files(path)
                if inside and inside <= code:
                    found.append(path)
                elif inside & code:
                    walk(path)
            elif path.suffix == ".py" and path in code:
                found.append(path)

    walk(src)
    package = src / "tvs"
    return sorted(found, key=lambda p: (p.parent != src / "stages", p.parent != package or p.is_dir(), str(p)))


def _code_dep(item: str, base: Path, src: Path) -> bool:
    return src in (base / item).resolve().parents


def declared(stage: dict, base: Path, src: Path = SRC) -> set[Path]:
    """The package and script files a stage's deps name, folders expanded."""
    files: set[Path] = set()
    for dep in stage.get("deps") or []:
        if _code_dep(dep, base, src):
            files |= python_files((base / dep).resolve())
    return files


def stage_script(stage: dict, base: Path) -> Path | None:
    """The ``src/stages/*.py`` script a stage's command runs, if any."""
    found = SCRIPT.search(str(stage.get("cmd", "")))
    return (base / found.group(0)).resolve() if found else None


def disagreeing(stages: dict[str, dict], base: Path, src: Path = SRC) -> dict[str, tuple[set[Path], set[Path]]]:
    """Stage -> (the code its script imports, the code its deps declare), for each stage where they differ."""
    wrong = {}
    for name, stage in stages.items():
        script = stage_script(stage, base)
        if script is not None:
            wanted, have = set(stage_code(script, src)), declared(stage, base, src)
            if wanted != have:
                wrong[name] = (wanted, have)
    return wrong


def mismatches(dvc_yaml: Path, src: Path = SRC) -> dict[str, tuple[list[str], list[str]]]:
    """Stage -> (imported but not declared, declared but not imported), for each stage that disagrees."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    rel = lambda paths: sorted(os.path.relpath(p, src.parent) for p in paths)  # noqa: E731
    return {
        name: (rel(wanted - have), rel(have - wanted))
        for name, (wanted, have) in disagreeing(stages, dvc_yaml.parent, src).items()
    }


def rewrite(text: str, base: Path, src: Path = SRC) -> str:
    """``text`` (a ``dvc.yaml`` in folder ``base``) with each disagreeing stage's code deps replaced.

    The replacement goes where the stage's first code dep was (first in ``deps:`` if it had none);
    lines of agreeing stages, data deps and comments are kept as they are.
    """
    wrong = disagreeing(yaml.safe_load(text)["stages"], base, src)
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    insert: dict[int, list[str]] = {}
    for name, (deps_at, code_at) in _deps_lines(lines, base, src).items():
        if name in wrong:
            drop |= set(code_at)
            at = code_at[0] if code_at else deps_at + 1
            insert[at] = [f"      - {os.path.relpath(path, base)}\n" for path in entries(wrong[name][0], src)]
    out = []
    for i, line in enumerate([*lines, ""]):
        out.extend(insert.get(i, []))
        if i not in drop:
            out.append(line)
    return "".join(out)


def _deps_lines(lines: list[str], base: Path, src: Path) -> dict[str, tuple[int, list[int]]]:
    """Stage -> (its ``deps:`` line, its code dep lines), by line number, for the stages with a ``deps:``."""
    found: dict[str, tuple[int, list[int]]] = {}
    section = name = None
    in_deps = False
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            section, name, in_deps = line.split(":", 1)[0], None, False
        elif section == "stages" and (header := STAGE.match(line)):
            name, in_deps = header.group(1), False
        elif name and line.rstrip() == "    deps:":
            found[name], in_deps = (i, []), True
        elif in_deps and (item := ITEM.match(line)):
            if _code_dep(item.group(1), base, src):
                found[name][1].append(i)
        elif not line.startswith("      "):
            in_deps = False
    return found


def declare(project: Path = PROJECT, check: bool = False) -> list[str]:
    """Rewrite (or with ``check``, only name) the pipelines whose stages' code deps disagree with the imports."""
    src = project / "src"
    changed = []
    for name in PIPELINES:
        path = project / name
        if not path.is_file():
            continue
        text = path.read_text()
        new = rewrite(text, path.parent, src)
        if new != text:
            changed.append(name)
            if not check:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(new)
                tmp.replace(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tvs.declare", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="name the files that would change; exit 1 if any")
    args = parser.parse_args(argv)
    changed = declare(check=args.check)
    verb = "would rewrite" if args.check else "rewrote"
    for name in changed:
        print(f"{verb} the code deps in {name}")
    if not changed:
        print("every stage's code deps are what its script imports")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
