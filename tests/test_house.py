"""One mechanism per job (issue 23): one evidence-settings type for every params file, one ELPV command
line, and a malformed JSON file reported like every other user error."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from tvs.config import EvaluateConfig, load_params
from tvs.elpv import main as elpv_main
from tvs.errors import ConfigError, DataError
from tvs.io import read_json
from tvs.study.params import StudyParams, load_study_params
from tvs.tune.params import TuneParams, load_tune_params

from .conftest import ENV, PROJECT

STUDY = {"fractions": [0.1], "seeds": [1]}
TUNE = {"lrs": [0.001], "epochs": 8, "scratch_epochs": [8], "search_repeat": 0, "repeats": [1]}


# --- one type for params.yaml's `evaluate` and the study's and tuning pipeline's `report` -------------


def test_the_study_and_the_tuning_pipeline_type_their_report_as_params_yamls_evaluate():
    assert typing.get_type_hints(StudyParams)["report"] is EvaluateConfig
    assert typing.get_type_hints(TuneParams)["report"] is EvaluateConfig


def message(path: Path, text: dict) -> str:
    path.write_text(yaml.safe_dump(text))
    loader = {"params.yaml": load_params, "study.yaml": load_study_params, "tune.yaml": load_tune_params}[path.name]
    with pytest.raises(ConfigError) as err:
        loader(path)
    return str(err.value).removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    "bad",
    [
        {"confidence": 0.3},  # the study took any level in (0, 1)
        {"resamples": 1_000_000},  # the study had no cap: the bootstrap holds every resample in memory
        {"resamples": 10},
        {"target_fraction": 1.5},
        {"equivalence_margin": 60},  # not a key of the study's settings
    ],
)
def test_a_bad_evidence_setting_fails_the_same_way_in_all_three_params_files(tmp_path: Path, bad: dict):
    main = message(tmp_path / "params.yaml", {"evaluate": bad})
    assert main.startswith("evaluate.")
    assert message(tmp_path / "study.yaml", {**STUDY, "report": bad}) == main.replace("evaluate.", "report.", 1)
    assert message(tmp_path / "tune.yaml", {**TUNE, "report": bad}) == main.replace("evaluate.", "report.", 1)


# --- malformed JSON is a user error naming the file -----------------------------------------------


def test_read_json_names_a_malformed_or_binary_file_as_a_data_error(tmp_path: Path):
    cut = tmp_path / "comparison.json"
    cut.write_text('{"significance": {')
    with pytest.raises(DataError) as err:
        read_json(cut)
    reason = "Expecting property name enclosed in double quotes: line 1 column 19 (char 18)"
    assert str(err.value) == f"{cut}: not valid JSON ({reason})"
    cut.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match=r"comparison\.json: not valid JSON \('utf-8' codec can't decode byte 0xff"):
        read_json(cut)


def test_a_stage_reading_a_malformed_json_stops_with_one_line_naming_it(tmp_path: Path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"select": {"cmd": "x", "outs": ["selected"]}}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TUNE))
    (tmp_path / "models" / "search" / "pretrained-0.001").mkdir(parents=True)
    (tmp_path / "models" / "search" / "pretrained-0.001" / "meta.json").write_text("{cut")
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "src" / "stages" / "choose_lr.py"), "--params", "params.yaml",
         "--models", "models/search", "--out", "selected"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == (
        "choose_lr: error: models/search/pretrained-0.001/meta.json: not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))\n"
    )


# --- one ELPV command line ------------------------------------------------------------------------


def test_python_m_tvs_elpv_and_the_elpv_stage_take_one_command_line():
    env = {**ENV, "PYTHONPATH": str(PROJECT / "src")}
    stage = [sys.executable, str(PROJECT / "src" / "stages" / "elpv.py"), "--help"]
    module = [sys.executable, "-m", "tvs.elpv", "--help"]
    helps = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60) for cmd in (stage, module)]
    assert [proc.returncode for proc in helps] == [0, 0]
    _, options = zip(*(proc.stdout.split("[-h]", 1) for proc in helps), strict=True)  # usage: <prog> [-h]
    assert options[0] == options[1]
    assert "--out OUT" in options[0] and "--scheme {binary,levels}" in options[0]


def test_python_m_tvs_elpv_exports_with_the_stages_flags(tmp_path: Path):
    elpv_main(["--out", str(tmp_path / "raw"), "--scheme", "levels"])  # data/dvc.yaml: --out raw --scheme binary
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["p0.00", "p0.33", "p0.67", "p1.00"]
