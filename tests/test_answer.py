"""What `make repro` ends with (tvs.answer): the verdict's headline, both arms' test accuracies and their
difference, and where the whole page is; short, narrow, and one line naming the file when one is wrong."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from tvs.answer import HEADLINE_LINES, WIDTH, Files, answer

from .conftest import PROJECT

FILES = Files()
MAX_LINES = 12


def run_answer(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvs.answer", *args], cwd=cwd, capture_output=True, text=True)


def committed(name: str) -> dict:
    return json.loads((PROJECT / name).read_text())


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The committed verdict and metrics files, in a folder laid out like the project."""
    for name in (FILES.verdict, FILES.pretrained, FILES.scratch, FILES.comparison):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((PROJECT / name).read_bytes())
    return tmp_path


def unwrapped(text: str) -> str:
    """``text`` with each wrapped line joined back to the line it continues."""
    return text.replace("\n  ", " ")


def assert_fits(text: str) -> None:
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES and max(map(len, lines)) <= WIDTH < 100, text


def test_the_answer_names_both_arms_with_the_committed_accuracies():
    proc = run_answer(PROJECT)  # as `make repro` runs it, on the files in git
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = proc.stdout
    pretrained, scratch = committed(FILES.pretrained)["accuracy"], committed(FILES.scratch)["accuracy"]
    difference = committed(FILES.comparison)["accuracy"]
    assert f"pretrained {100 * pretrained:.1f}%, scratch {100 * scratch:.1f}%" in unwrapped(out)
    assert f"pretrained - scratch: {100 * difference:+.1f} pp" in unwrapped(out)
    verdict = (PROJECT / FILES.verdict).read_text()
    title, recommendation = verdict.splitlines()[0].lstrip("# "), re.search(r"^\*\*(.+?)\*\*", verdict, re.M)[1]
    assert out.startswith(title + "\n" + recommendation + ":")
    assert "Full page: reports/verdict.md; plots: `dvc plots show`" in out
    assert_fits(out)


def test_a_long_verdict_and_class_name_still_fit_a_terminal(copy: Path):
    verdict = "# Verdict\n\n**Inconclusive**: " + "the difference could be noise on these images " * 30 + "\n\nMore.\n"
    comparison = {**committed(FILES.comparison), "majority_class": "c" * 500}
    text = answer(verdict=verdict, pretrained=committed(FILES.pretrained), scratch=committed(FILES.scratch),
                  comparison=comparison)  # fmt: skip
    assert_fits(text)
    assert text.splitlines()[HEADLINE_LINES - 1].endswith("…") and "More." not in text
    assert_fits(run_answer(copy).stdout)


@pytest.mark.parametrize("name", [FILES.verdict, FILES.pretrained, FILES.scratch, FILES.comparison])
def test_a_missing_file_is_one_line_naming_it(copy: Path, name: str):
    (copy / name).unlink()
    proc = run_answer(copy)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"answer: error: {name}: no such file; run `make repro` (or `dvc repro`) first\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b'{"accuracy": 0.8', "not valid JSON (Expecting ',' delimiter: line 1 column 17 (char 16))"),
     (b"[0.8]", "not a JSON object"), (b"\xff\xfe", "not UTF-8 text"),
     (b'{"accuracy": "high"}', "no number under `accuracy`")],
)  # fmt: skip
def test_a_malformed_metrics_file_is_one_line_naming_it(copy: Path, content: bytes, reason: str):
    (copy / FILES.scratch).write_bytes(content)
    proc = run_answer(copy)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"answer: error: {FILES.scratch}: {reason}; rerun `dvc repro`\n"


def test_a_verdict_without_a_recommendation_is_one_line_naming_it(copy: Path):
    (copy / FILES.verdict).write_text("# Verdict\n\nNothing in bold.\n")
    proc = run_answer(copy)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"answer: error: {FILES.verdict}: no recommendation (a line starting with **) in it; rerun `dvc repro`\n"
    )


def test_control_characters_from_a_class_name_reach_the_terminal_escaped(copy: Path):
    name = "\x1b[2J\x1b[31mdefective\x07\n\u202ereversed"
    path = copy / FILES.comparison
    path.write_text(json.dumps({**json.loads(path.read_text()), "majority_class": name}))
    (copy / FILES.verdict).write_text("# Verdict\x1b]0;title\x07\n\n**Fine-tune**: the `\x1b[5m` class.\n")
    proc = run_answer(copy)
    assert proc.returncode == 0, proc.stderr
    shown = [char for char in proc.stdout if char != "\n" and unicodedata.category(char) in ("Cc", "Cf")]
    assert shown == []
    # escaped, then cut to 40 characters
    assert "majority class, `\\x1b[2J\\x1b[31mdefective\\x07\\n\\u202erev…`." in unwrapped(proc.stdout)
    assert proc.stdout.startswith("Verdict\\x1b]0;title\\x07\nFine-tune: the `\\x1b[5m` class.\n")
    assert_fits(proc.stdout)


def test_a_diverged_run_has_no_difference_and_says_why():
    comparison = {**committed(FILES.comparison), "accuracy": None, "diverged": 1}
    text = answer(verdict="# V\n\n**No verdict**: scratch diverged.\n", pretrained=committed(FILES.pretrained),
                  scratch=committed(FILES.scratch), comparison=comparison)  # fmt: skip
    assert "pretrained - scratch: none, an arm diverged (read the verdict)." in unwrapped(text)
    assert_fits(text)


def test_make_repro_ends_with_the_answer_instead_of_every_metric():
    makefile = (PROJECT / "Makefile").read_text()
    recipe = re.search(r"^repro:.*\n((?:\t.*\n)+)", makefile, re.M)[1].splitlines()
    assert recipe[-1] == "\t$(BIN)/python -m tvs.answer" and "metrics show" not in "".join(recipe)


def test_the_answer_reads_files_the_main_pipeline_writes():
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].values()
    declared = {next(iter(e)) if isinstance(e, dict) else e for s in stages for k in ("outs", "metrics") for e in
                s.get(k, [])}  # fmt: skip
    assert {FILES.verdict, FILES.pretrained, FILES.scratch, FILES.comparison} <= declared
