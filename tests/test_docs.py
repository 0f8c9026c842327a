"""The README and docs/ against the project: the README stays a front door, every relative link
lands, the module table in docs/architecture.md is the code's own, and every command in a ```bash
block names a real Makefile target, module, script, param key and DVC stage.

Static checks only (no command is run), so commands that need a GPU, several machines or a real
S3 bucket are held to the project as well. ``python -m tests.test_docs`` prints the module tables.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from tvs.deps import import_closure

PROJECT = Path(__file__).resolve().parents[1]
SRC = PROJECT / "src"
README = PROJECT / "README.md"
DOCS = sorted((PROJECT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
ARCHITECTURE = PROJECT / "docs" / "architecture.md"
BEGIN, END = "<!-- module tables: begin -->", "<!-- module tables: end -->"
README_MAX_LINES = 200
PIPELINES = ("dvc.yaml", "data/dvc.yaml", "study/dvc.yaml", "tune/dvc.yaml")


def rel(path: Path) -> str:
    return path.relative_to(PROJECT).as_posix()


# --- the module tables -------------------------------------------------------------------------


def summary(path: Path) -> str:
    """A module's docstring summary (its first paragraph) on one line, Sphinx roles as plain code."""
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{rel(path)}: no module docstring (its row in docs/architecture.md is its summary)"
    text = " ".join(doc.split("\n\n", 1)[0].split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)  # :mod:`~tvs.x` -> `tvs.x`
    return text.replace("``", "`").replace("|", "\\|")


def stage_scripts() -> list[Path]:
    return sorted((SRC / "stages").glob("*.py"))


def package_modules() -> list[Path]:
    return sorted((SRC / "tvs").rglob("*.py"))


@cache
def closures() -> dict[str, set[Path]]:
    """Each stage script's package files, as ``tvs.deps`` reads them (what its code deps in dvc.yaml are)."""
    return {script.name: import_closure([script], SRC) for script in stage_scripts()}


def importers(module: Path) -> str:
    """The stage scripts that import ``module``, directly or through other modules."""
    users = [name for name, files in closures().items() if module in files]
    if len(users) == len(closures()):
        return "every stage script"
    return ", ".join(f"`{name}`" for name in users) or "no stage script"


def module_tables() -> str:
    """The two tables of docs/architecture.md, as they must read: derived from the code, never typed."""
    lines = ["| stage script | what it does (its docstring) |", "|---|---|"]
    lines += [f"| `{rel(p).removeprefix('src/')}` | {summary(p)} |" for p in stage_scripts()]
    lines += ["", "| module | what it does (its docstring) | imported by |", "|---|---|---|"]
    lines += [f"| `{rel(p).removeprefix('src/')}` | {summary(p)} | {importers(p)} |" for p in package_modules()]
    return "\n".join(lines)


def documented_tables() -> str:
    text = ARCHITECTURE.read_text()
    assert BEGIN in text and END in text, f"docs/architecture.md: the markers {BEGIN} and {END} are gone"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_module_tables_list_every_module_with_its_docstring_and_importers():
    expected = module_tables()
    assert documented_tables() == expected, (
        f"docs/architecture.md's module tables differ from the code; paste this between the markers "
        f"(or run `python -m tests.test_docs`):\n\n{expected}\n"
    )


def test_modules_no_stage_imports_say_who_runs_them():
    rest = ARCHITECTURE.read_text().replace(documented_tables(), "")
    for module in package_modules():
        if importers(module) == "no stage script":
            name = rel(module).removeprefix("src/")
            assert f"`{name}`" in rest, f"docs/architecture.md: say what runs {name} (no stage imports it)"


# --- the README's size and the links -----------------------------------------------------------


def test_the_readme_is_a_front_door_of_at_most_200_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md: {lines} lines; move reference material into docs/"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page`` (lower case, punctuation dropped, spaces to -)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_lands_on_a_file_and_heading_that_exist(page: Path):
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{rel(page)}: link {link!r} points to a missing file"
        if anchor:
            assert anchor in anchors(target), f"{rel(page)}: link {link!r}: no such heading in {rel(target)}"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in relative_links(README)}
    missing = [rel(p) for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


# --- the commands of every ```bash block -------------------------------------------------------


def bash_blocks(page: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """The simple commands of a block: continuations joined, comments dropped, split at && ; | ||."""
    found: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        words: list[str] = []
        for word in shlex.split(line, comments=True):
            if word in ("&&", "||", ";", "|"):
                found.append(words)
                words = []
            else:
                words.append(word)
        found.append(words)
    return [c for c in found if c]


def without_env(words: list[str]) -> list[str]:
    """``PYTHONPATH=src python -m ...`` -> ``python -m ...``."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return words


@cache
def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", (PROJECT / "Makefile").read_text(), flags=re.M))


def dotted_keys(tree: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= dotted_keys(value, f"{prefix}{key}.")
    return keys


@cache
def param_keys(params_file: str) -> set[str]:
    return dotted_keys(yaml.safe_load((PROJECT / params_file).read_text()))


def stage_names(pipeline: str) -> set[str]:
    """The stages of one dvc.yaml, a matrix stage once per cell (``train_scratch@0.05-1``) and by name."""
    spec = yaml.safe_load((PROJECT / pipeline).read_text())
    params_file = PROJECT / Path(pipeline).parent / "params.yaml"
    params = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
    names: set[str] = set()
    for name, stage in spec.get("stages", {}).items():
        names.add(name)
        if "matrix" in stage:
            axes = []
            for values in stage["matrix"].values():
                if isinstance(values, str):  # ${fractions}
                    values = params[values.strip("${}")]
                axes.append([str(v) for v in values])
            cells = [""]
            for axis in axes:
                cells = [f"{cell}-{v}" if cell else v for cell in cells for v in axis]
            names |= {f"{name}@{cell}" for cell in cells}
    return names


def check_dvc_target(target: str, glob: bool) -> str | None:
    """Why ``target`` of ``dvc repro/status/commit/remove`` names nothing, or None."""
    pipeline, _, stage = target.rpartition(":") if ":" in target else ("", "", target)
    if target in PIPELINES or (PROJECT / target).is_dir() and f"{target}/dvc.yaml" in PIPELINES:
        return None
    if not pipeline and target.endswith((".yaml", ".dvc")):
        return f"{target}: no such pipeline file"
    pipeline = pipeline or "dvc.yaml"
    if pipeline not in PIPELINES:
        return f"{target}: {pipeline} is not one of the project's pipelines {PIPELINES}"
    names = stage_names(pipeline)
    if glob and not fnmatch.filter(names, stage) or not glob and stage not in names:
        return f"{target}: no stage {stage!r} in {pipeline}"
    return None


VALUE_OPTIONS = {"-S", "--set-param", "-n", "--name", "-j", "--jobs", "-r", "--remote", "--rev", "-o", "--out"}


def check_dvc(words: list[str]) -> list[str]:
    problems = []
    sub = [w for w in words[1:3] if not w.startswith("-")]
    i = 1
    positional: list[str] = []
    while i < len(words):
        word = words[i]
        if word in ("-S", "--set-param"):
            key, _, _ = words[i + 1].partition("=")
            params_file, _, key = key.rpartition(":") if ":" in key else ("params.yaml", "", key)
            if not (PROJECT / params_file).is_file() or key not in param_keys(params_file):
                problems.append(f"-S {words[i + 1]}: no key {key!r} in {params_file}")
        if word in VALUE_OPTIONS:
            i += 2
            continue
        if not word.startswith("-"):
            positional.append(word)
        i += 1
    if sub[:1] in (["repro"], ["status"], ["commit"], ["remove"]):
        for target in positional[1:]:
            problems.append(check_dvc_target(target, glob="--glob" in words))
    return [p for p in problems if p]


def check_command(words: list[str]) -> list[str]:
    """What in one command names nothing in the project."""
    words = without_env(words)
    problems = []
    if words[0] == "make":
        problems += [f"make {t}: no such Makefile target" for t in words[1:] if t not in make_targets()]
    if words[0].endswith("python") and words[1:2] == ["-m"]:
        module = words[2]
        if module.split(".")[0] in ("tvs", "benchmarks", "tests"):
            base = (SRC if module.startswith("tvs") else PROJECT).joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                problems.append(f"python -m {module}: no such module")
    for word in words:
        if re.fullmatch(r"(\.\./)?src/stages/\w+\.py", word) and not (PROJECT / word.removeprefix("../")).is_file():
            problems.append(f"{word}: no such stage script")
    if words[0] == "dvc":
        problems += check_dvc(words)
    return problems


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_command_in_a_bash_block_names_real_targets_modules_keys_and_stages(page: Path):
    problems = [p for block in bash_blocks(page) for words in commands(block) for p in check_command(words)]
    assert not problems, f"{rel(page)}:\n" + "\n".join(problems)


def test_the_command_check_catches_what_it_is_for():
    bad = "make reproduce\npython -m tvs.nothing\ndvc exp run -S train.epoch=3\ndvc repro study/dvc.yaml:trian\n"
    bad += "dvc repro --glob 'study/dvc.yaml:*@0.5-*'\ntorchrun src/stages/nothing.py\n"
    problems = [p for words in commands(bad) for p in check_command(words)]
    assert len(problems) == 6, problems
    good = "make repro && dvc exp run -S scratch.lr_mult=3 -S 'model.weights=hf-hub:x@<commit>'\n"
    good += "dvc repro --pull --glob 'study/dvc.yaml:*@0.05-*' study/dvc.yaml data/dvc.yaml:elpv train_scratch\n"
    good += "PYTHONPATH=src python -m tvs.pr --out x  # a comment\ndvc commit train_pretrained\n"
    assert [p for words in commands(good) for p in check_command(words)] == []


if __name__ == "__main__":
    print(module_tables())
