"""dvc.yaml is a promise: each stage's code deps are exactly the package files its script imports.

An undeclared import gives stale results nobody notices (DVC does not rerun the stage when that
file changes); an over-declared file reruns hours of training for an edit that cannot change them.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tvs.declare import PIPELINES as DECLARED
from tvs.declare import declare, declared, entries, main, mismatches
from tvs.deps import import_closure, stage_code
from tvs.io import output_roots
from tvs.train.resume import TRAINING_STAGE

from .conftest import PROJECT, REPRODUCED_PARAMS

PIPELINES = tuple(PROJECT / name for name in DECLARED)


def stages(dvc_yaml: Path) -> dict[str, dict]:
    return yaml.safe_load(dvc_yaml.read_text())["stages"]


def declared_code(dvc_yaml: Path, stage: dict, project: Path) -> set[Path]:
    """The Python files under ``src/`` a stage's deps name, folders expanded (as DVC hashes them)."""
    return declared(stage, dvc_yaml.parent, project / "src")


def code_mismatches(dvc_yaml: Path, project: Path = PROJECT) -> dict[str, tuple[list[str], list[str]]]:
    """Stage -> (imported but undeclared, declared but not imported), for every stage that disagrees."""
    return mismatches(dvc_yaml, project / "src")


@pytest.mark.parametrize("dvc_yaml", PIPELINES, ids=DECLARED)
def test_every_stage_declares_exactly_the_package_code_it_imports(dvc_yaml: Path):
    assert code_mismatches(dvc_yaml) == {}, "`make deps` writes each stage's code deps from its imports"


def test_an_import_that_dvc_yaml_does_not_declare_is_caught(tmp_path: Path):
    project = copy_project(tmp_path / "project")
    loop = project / "src" / "tvs" / "train" / "loop.py"
    loop.write_text(loop.read_text().replace("import logging\n", "import logging\n\nimport tvs.verdict.pair\n", 1))

    wrong = code_mismatches(project / "dvc.yaml", project)

    undeclared = ["src/tvs/verdict/__init__.py", "src/tvs/verdict/pair.py", "src/tvs/verdict/plots.py"]
    assert set(wrong) == {"train_pretrained", "train_scratch"}
    for stage in wrong.values():
        assert set(undeclared) <= set(stage[0]) and stage[1] == []
    assert set(code_mismatches(project / "study" / "dvc.yaml", project)) == {
        "train_pretrained",
        "train_scratch",
    }


def copy_project(into: Path) -> Path:
    """The package and the four pipelines, as a maintainer's working copy."""
    shutil.copytree(PROJECT / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in DECLARED:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT / name, into / name)
    return into


def test_make_deps_writes_a_new_import_into_each_training_block_and_changes_nothing_else(tmp_path: Path):
    """The training block's code deps are in 8 stages over 3 files; one command writes them all."""
    project = copy_project(tmp_path / "project")
    before = {name: (project / name).read_text() for name in ("dvc.yaml", "study/dvc.yaml", "tune/dvc.yaml")}
    loop = project / "src" / "tvs" / "train" / "loop.py"
    loop.write_text(loop.read_text().replace("import logging\n", "import logging\n\nimport tvs.verdict.pair\n", 1))

    assert sorted(declare(project, check=True)) == sorted(before)
    assert (project / "dvc.yaml").read_text() == before["dvc.yaml"]  # --check writes nothing
    assert sorted(declare(project)) == sorted(before)

    src = project / "src"
    now = entries(set(stage_code(src / "stages" / "train.py", src)), src)
    was = entries(set(stage_code(TRAINING_STAGE)))
    gained = [p.relative_to(src).as_posix() for p in now if PROJECT / "src" / p.relative_to(src) not in was]
    assert "tvs/verdict" in gained  # pair.py imports the rest of its folder: the folder is one entry
    for name, old in before.items():
        new = (project / name).read_text().splitlines()
        assert code_mismatches(project / name, project) == {}
        ops = difflib.SequenceMatcher(a=old.splitlines(), b=new, autojunk=False).get_opcodes()
        assert {op[0] for op in ops} == {"equal", "insert"}  # nothing removed or reordered
        inserted = [line for op, _, _, j1, j2 in ops if op == "insert" for line in new[j1:j2]]
        prefix = "../" if "/" in name else ""
        blocks = {"dvc.yaml": 2, "study/dvc.yaml": 2, "tune/dvc.yaml": 4}[name]  # the arms; tune: search_, final_
        assert inserted == [f"      - {prefix}src/{path}" for _ in range(blocks) for path in gained]
    assert declare(project) == []  # written once, then nothing to do


def test_make_deps_puts_back_a_deleted_dep_and_every_other_byte(tmp_path: Path):
    project = copy_project(tmp_path / "project")
    committed = (project / "study" / "dvc.yaml").read_text()
    lines = committed.splitlines(keepends=True)
    first = lines.index("      - ../src/tvs/io.py\n")  # in `prepare`, the first stage
    scratch = lines.index("  train_scratch:\n")
    deps = lines.index("    deps:\n", scratch)
    end = lines.index("      - prepared/${item.seed}\n", deps)
    broken = lines[:first] + lines[first + 1 : deps + 1] + lines[end:]  # one dep gone; and all of scratch's code
    (project / "study" / "dvc.yaml").write_text("".join(broken))
    assert set(code_mismatches(project / "study" / "dvc.yaml", project)) == {"prepare", "train_scratch"}

    assert main(["--check"]) == 0  # the project's own pipelines agree
    assert declare(project) == ["study/dvc.yaml"]

    assert (project / "study" / "dvc.yaml").read_text() == committed


def test_a_function_level_import_counts_too(tmp_path: Path):
    src = tmp_path / "src"
    (src / "tvs").mkdir(parents=True)
    (src / "tvs" / "__init__.py").write_text("")
    (src / "tvs" / "a.py").write_text("def f():\n    from tvs import b\n    return b\n")
    (src / "tvs" / "b.py").write_text("import os\n")
    assert import_closure([src / "tvs" / "a.py"], src) == {src / "tvs" / "__init__.py", src / "tvs" / "b.py"}


def test_editing_study_report_code_reruns_only_the_study_report():
    study_code = set((PROJECT / "src" / "tvs" / "study").rglob("*.py"))
    users = {
        f"{dvc_yaml.parent.name}:{name}"
        for dvc_yaml in PIPELINES
        for name, stage in stages(dvc_yaml).items()
        if declared_code(dvc_yaml, stage, PROJECT) & study_code
    }
    assert users == {"study:report"}


def test_training_does_not_import_report_code():
    files = {p.relative_to(PROJECT / "src").as_posix() for p in stage_code(TRAINING_STAGE)}
    assert not {f for f in files if f.startswith(("tvs/study/", "tvs/verdict/", "tvs/evaluate/"))}


def test_the_resume_fingerprint_hashes_the_training_stage_code():
    """The fingerprint's file list is the train stages' declared code, not a list of its own."""
    stage = stages(PROJECT / "dvc.yaml")["train_scratch"]
    assert set(stage_code(TRAINING_STAGE)) == declared_code(PROJECT / "dvc.yaml", stage, PROJECT)


def test_local_weights_folder_is_a_dependency_of_the_pretrained_arm_only():
    main, study = stages(PROJECT / "dvc.yaml"), stages(PROJECT / "study" / "dvc.yaml")
    assert "weights" in main["train_pretrained"]["deps"]
    assert "../weights" in study["train_pretrained"]["deps"]
    assert not any("weights" in str(dep).split("/")[-1:] for dep in main["train_scratch"]["deps"])
    assert not any("weights" in str(dep).split("/")[-1:] for dep in study["train_scratch"]["deps"])


def expand(keys: list[str], params: dict) -> set[str]:
    """Declared params as leaf keys of ``params.yaml``: a section stands for each of its keys."""
    out = set()
    for key in keys:
        value = params.get(key) if "." not in key else None
        out |= {f"{key}.{sub}" for sub in value} if isinstance(value, dict) else {key}
    return out


# Each training stage of the study and the tuning grid, and the main stage whose script it runs.
GRID_TRAINING = [
    ("study", "train_pretrained", "train_pretrained"),
    ("study", "train_scratch", "train_scratch"),
    *(("tune", f"{phase}_{arm}", f"train_{arm}") for phase in ("search", "final") for arm in ("pretrained", "scratch")),
]


@pytest.mark.parametrize(("pipeline", "name", "main_name"), GRID_TRAINING)
def test_a_grid_cell_declares_the_main_stages_params_but_the_keys_it_sets(pipeline: str, name: str, main_name: str):
    """A cell runs the main stage's script on ../params.yaml, with some keys set on its command line
    (``--set seed=``, ``data.train_fraction``, ``train.epochs``, ``data.image_size``). It declares every
    key the main stage does but those: changing a key in params.yaml that every cell overrides reruns
    no cell (its result cannot change), changing any other one reruns them all."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    stage = stages(PROJECT / pipeline / "dvc.yaml")[name]
    overridden = set(re.findall(r"--set ([\w.]+)=", stage["cmd"]))
    if chosen := re.search(r'--set "\$\(cat (selected/\w+\.set)\)"', stage["cmd"]):
        assert chosen[1] in stage["deps"]  # the chosen lr, `lr=<value>`, is a file the stage depends on
        overridden.add("lr")
    declared = next(p["../params.yaml"] for p in stage["params"] if isinstance(p, dict))
    main = expand(stages(PROJECT / "dvc.yaml")[main_name]["params"], params)
    assert expand(declared, params) == main - overridden
    assert overridden and overridden <= main  # what it sets is what the main stage reads


def test_output_roots_come_from_dvc_yaml():
    assert output_roots(PROJECT / "dvc.yaml") == (
        "data/prepared",
        "dvclive/pretrained",
        "dvclive/scratch",
        "eval",
        "metrics",
        "models/pretrained",
        "models/scratch",
        "reports",
        "reports/plots",
    )
    assert output_roots(PROJECT / "study" / "dvc.yaml") == (
        "dvclive", "eval", "metrics", "models", "prepared", "reports", "splits"
    )  # fmt: skip


@pytest.mark.e2e
def test_replacing_a_local_weights_file_makes_only_the_pretrained_arm_stale(tiny_repo: Path):
    """The bug this file guards against: new weights under the same name once left results stale."""
    import torch
    from safetensors.torch import save_file

    from tvs.models.archs import build_model

    from .conftest import dvc, write_params

    root = tiny_repo
    write_params(
        root / "params.yaml", **REPRODUCED_PARAMS, model={"arch": "resnet18", "weights": "weights/mine.safetensors"}
    )

    def write_weights(seed: int) -> None:
        torch.manual_seed(seed)
        save_file(build_model("resnet18", 1000).state_dict(), str(root / "weights" / "mine.safetensors"))

    training = ("train_pretrained", "train_scratch")  # the stages asserted on (scoring is tested elsewhere)
    write_weights(0)  # a new arch for both arms; the prepared data stays
    assert json.loads(dvc(root, "status", "--json", *training)).keys() == set(training)
    # What is asserted is staleness, so the lock records these inputs without training on them (`dvc commit`
    # hashes the deps as they are now): the same lock a run would write, minutes of training cheaper.
    dvc(root, "commit", "--force", *training)
    assert json.loads(dvc(root, "status", "--json", *training)) == {}

    write_weights(1)  # other weights, same file name
    status = dvc(root, "status", *training)
    assert "train_pretrained" in status and "modified:           weights" in status
    assert json.loads(dvc(root, "status", "--json", *training)).keys() == {"train_pretrained"}  # scratch stays
