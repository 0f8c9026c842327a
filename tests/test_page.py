"""The one page (tvs.page) and its rule (tvs.ladder, tvs.evidence), on fabricated evidence.

Each case of the verdict-page issue: 2 repeats (too few for an interval), scratch at the baseline
(no break-even), a wide CI that includes zero ("cannot tell"), a difference inside the margin
(equivalent), evidence left stale by a data or params change, tied class counts (1/k, no class
named), and text from the user's files that must stay text in Markdown and HTML.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from tvs.evidence import Record, current_record, differences, flatten, record_from_lock, set_overrides
from tvs.ladder import (
    CANNOT_TELL,
    EQUIVALENT,
    PRETRAINED,
    Pair,
    Repeats,
    baseline_from_counts,
    break_even,
    catch_up,
    decide_ladder,
    judge,
    pair_rung,
    repeats_rung,
)
from tvs.page import write_page
from tvs.page_render import to_html, to_markdown

from .conftest import PROJECT
from .test_plots_page import CHROMIUM, OFFLINE, needs_chromium

MARGIN = 0.02


def test_the_rule_says_equivalent_only_when_the_ci_lies_inside_the_margin():
    assert judge(0.01, 0.05, MARGIN) == PRETRAINED
    assert judge(-0.01, 0.015, MARGIN) == EQUIVALENT
    assert judge(-0.01, 0.08, MARGIN) == CANNOT_TELL  # includes zero, but wider than the margin
    assert judge(0.01, 0.05, MARGIN, significant=False) == CANNOT_TELL  # McNemar disagrees


def test_two_repeats_give_no_interval_and_do_not_govern():
    rung = repeats_rung("b", "(b)", Repeats((0.9, 0.5), (0.4, 0.6)), 0.95, MARGIN, "more seeds")
    assert rung.status == "too few repeats" and rung.decision is None
    assert "2 repeats: too few to estimate the spread" in rung.result and "CI" not in rung.result
    pair = pair_rung(Pair(0.8, 0.7, 0.05, 0.15, 0.001, 500, 0.95), 0.05, MARGIN, "make repro")
    answer = decide_ladder([rung, pair], MARGIN, None)
    assert answer.governing == "c" and answer.decision == PRETRAINED
    assert any("too few repeats" in note for note in answer.notes)


def test_a_wide_ci_that_includes_zero_is_cannot_tell_not_catching_up():
    wide = Repeats((0.60, 0.80, 0.55), (0.70, 0.62, 0.60))
    rung = repeats_rung("a", "(a)", wide, 0.95, MARGIN, "")
    assert rung.decision == CANNOT_TELL
    assert decide_ladder([rung], MARGIN, None).headline.startswith("Cannot tell.")
    text = catch_up({16: wide}, 0.95, MARGIN, 8)
    assert "cannot tell" in text and "catches up" not in text


def test_a_difference_inside_the_margin_is_equivalent_and_says_the_margin():
    close = Repeats((0.801, 0.812, 0.805, 0.809), (0.800, 0.808, 0.806, 0.807))
    answer = decide_ladder([repeats_rung("b", "(b)", close, 0.95, MARGIN, "")], MARGIN, None)
    assert answer.decision == EQUIVALENT and "equivalent within ±2.0 pp" in answer.headline
    assert "scratch catches up (within ±2.0 pp)" in catch_up({16: close}, 0.95, MARGIN, 8)


def test_no_break_even_while_scratch_sits_at_the_baseline():
    at_chance = Repeats((0.26, 0.24, 0.25), (0.25, 0.25, 0.25))  # both at chance: "equal" means both failed
    text = break_even({20.0: at_chance}, 0.25, 0.95, MARGIN)
    assert "Break-even" not in text and "20: at the baseline" in text
    learnt = Repeats((0.900, 0.910, 0.905), (0.899, 0.909, 0.906))
    assert break_even({20.0: at_chance, 80.0: learnt}, 0.25, 0.95, MARGIN).startswith("Break-even at 80 images")
    assert "too few to estimate" in break_even({20.0: Repeats((0.9, 0.8), (0.3, 0.2))}, 0.25, 0.95, MARGIN)


def test_arms_alike_only_at_the_baseline_are_cannot_tell_not_either():
    """The own-data run that showed it: 4 test images, both arms at 50% on two tied classes, a CI of 0 to 0."""
    at_floor = pair_rung(Pair(0.5, 0.5, 0.0, 0.0, 1.0, 4, 0.95), 0.05, MARGIN, "make repro")
    assert at_floor.decision == EQUIVALENT  # the rule alone would say so
    answer = decide_ladder([at_floor], MARGIN, baseline_from_counts({"a": 2, "b": 2}))
    assert answer.decision == CANNOT_TELL and answer.headline.startswith("Cannot tell.")
    assert any("pretrained and scratch are not above the baseline (50.0%)" in note for note in answer.notes)
    assert answer.rungs[0].decision == CANNOT_TELL
    learnt = pair_rung(Pair(0.9, 0.9, -0.01, 0.01, 1.0, 400, 0.95), 0.05, MARGIN, "make repro")
    assert decide_ladder([learnt], MARGIN, baseline_from_counts({"a": 2, "b": 2})).decision == EQUIVALENT


def test_tied_class_counts_make_the_baseline_one_over_k_with_no_class_named():
    tied = baseline_from_counts({"one": 10, "two": 10, "three": 10, "four": 10})
    assert tied.accuracy == pytest.approx(0.25) and tied.tied and "1/4" in tied.describe()
    assert "one" not in tied.describe()
    majority = baseline_from_counts({"ok": 30, "bad": 10})
    assert majority.accuracy == 0.75 and "“ok”" in majority.describe()


LOCK = {
    "stages": {
        "prepare@1": {"deps": [{"path": "../data/raw", "md5": "abc.dir"}]},
        "train_pretrained@0.5-1": {
            "cmd": "python t.py --set data.train_fraction=0.5 --set seed=1 --set data.image_size=64",
            "params": {"../params.yaml": {"lr": 0.001, "data": {"image_size": 128}, "train": {"epochs": 8}}},
        },
        "train_scratch@0.5-1": {
            "cmd": "python t.py --set data.train_fraction=0.5 --set seed=1 --set data.image_size=64",
            "params": {"../params.yaml": {"lr": 0.001, "data": {"image_size": 128}, "train": {"epochs": 8}}},
        },
    }
}


def test_a_record_is_what_the_lock_ran_with_and_differences_name_each_key():
    record = record_from_lock(LOCK, "study/dvc.lock")
    assert record == Record("abc.dir", {"lr": 0.001, "data.image_size": 64, "train.epochs": 8})
    assert set_overrides("x --set a.b=1e-3 --set c=x") == {"a.b": 0.001, "c": "x"}  # as the stage reads it
    # dvc.lock records a param declared as a dotted key under that name (the grids' cells declare single keys)
    assert flatten({"data.image_size": 32, "train": {"epochs": 1}, "seed": 3}) == {
        "data.image_size": 32, "train.epochs": 1,
    }  # fmt: skip
    # the tuning pipeline's final runs: the chosen lr is read by the shell when the stage runs
    assert set_overrides('x --set "$(cat selected/scratch.set)" --set seed=2') == {"seed": 2}
    now = current_record({"lr": 0.001, "data": {"image_size": 128}, "train": {"epochs": 8}}, [LOCKED_DATA])
    assert differences(record, now) == ["data.image_size 64 (params.yaml: 128)"]
    other = current_record({"lr": 0.001, "data": {"image_size": 64}, "train": {"epochs": 8}}, [OWN_DATA])
    assert differences(record, other) == ["other data"]
    assert (
        differences(record, Record("abc.dir", {**record.config, "train.new_key": 1}), defaults={"train.new_key": 1})
        == []
    )


LOCKED_DATA = {"stages": {"elpv": {"outs": [{"path": "raw", "md5": "abc.dir"}]}}}
OWN_DATA = {"outs": [{"path": "raw", "md5": "mine.dir"}]}


# --- the page, end to end on a fabricated project -------------------------------------------------


def fabricated_project(root: Path, classes: dict[str, int], seeds: int = 3) -> Path:
    """A project folder with the main pair's results, a study's cells and a record, all made up."""
    shutil.copy(PROJECT / "params.yaml", root / "params.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "data").mkdir()
    (root / "data" / "raw.dvc").write_text(yaml.safe_dump({"outs": [{"path": "raw", "md5": "mine.dir"}]}))
    train = {k: params[k] for k in ("lr", "data", "train", "model", "pretrained", "scratch")}
    lock = {
        "stages": {
            "prepare": {"deps": [{"path": "data/raw", "md5": "mine.dir"}]},
            "train_pretrained": {"cmd": "python", "params": {"params.yaml": train}},
            "train_scratch": {"cmd": "python", "params": {"params.yaml": train}},
        }
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "metrics").mkdir()
    sig = {"accuracy_diff_ci_low": 0.1, "accuracy_diff_ci_high": 0.3, "mcnemar_p": 0.0001, "test_images": 40,
           "confidence": 0.95}  # fmt: skip
    (root / "metrics" / "comparison.json").write_text(json.dumps({"significance": sig}))
    for arm, acc in (("pretrained", 0.7), ("scratch", 0.5)):
        (root / "metrics" / f"{arm}.json").write_text(json.dumps({"accuracy": acc, "train_seconds": 10.0}))
        plots = root / "reports" / "plots" / arm
        plots.mkdir(parents=True)
        rows = [{"actual": name, "predicted": next(iter(classes))} for name, n in classes.items() for _ in range(n)]
        (plots / "confusion.json").write_text(json.dumps(rows))
    (root / "evidence" / "study").mkdir(parents=True)
    cells = [
        {"train_fraction": f, "seed": s, "images_per_class": 10 * f, "pretrained_accuracy": 0.6 + 0.01 * s,
         "scratch_accuracy": 0.25, "majority": 0.25}
        for f in (0.5, 1.0) for s in range(seeds)
    ]  # fmt: skip
    pd.DataFrame(cells).to_csv(root / "evidence" / "study" / "cells.csv", index=False)
    study = Record("mine.dir", {key: value for key, value in current_record(params, []).config.items()})
    (root / "evidence" / "study" / "record.json").write_text(json.dumps(study.to_json()))
    return root


def test_the_page_names_the_governing_rung_and_escapes_every_class_name(tmp_path: Path):
    evil = "k|</details>\n# FAKE `x` <img src=x onerror=alert(1)> @octocat"
    root = fabricated_project(tmp_path, {evil: 10, "two": 10, "three": 10, "four": 10})
    answer, _ = write_page(root)
    assert answer.governing == "b" and answer.decision == PRETRAINED
    page = (root / "reports" / "answer.md").read_text()
    assert page.startswith("# Fine-tune or train from scratch?\n\n**Fine-tune.** Governed by rung b")
    assert "Baseline: 25.0% (1/4: the test split" in page and "classes are tied" in page
    assert "<img" not in page and "</details>" not in page and "\n# FAKE" not in page and " @octocat" not in page
    assert "\\`x\\`" in page  # the class's backticks are text, not a code span
    assert "No break-even shown" in page and "0.5" not in page.split("How much data")[1].split("\n")[0][:20]
    html = (root / "reports" / "answer.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "http" not in html.replace("http-equiv", "")  # nothing to fetch: the page is self-contained


def test_the_next_rungs_cost_counts_the_tuning_grids_longer_schedules(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})  # 10 s per training run, params.yaml's 8 epochs
    (root / "tune").mkdir()
    grid = {"lrs": [0.001, 0.01], "epochs": 8, "scratch_epochs": [8, 16, 32], "repeats": [1, 2, 3], "image_size": 128}
    (root / "tune" / "params.yaml").write_text(yaml.safe_dump(grid))
    write_page(root)
    page = (root / "reports" / "answer.md").read_text()
    # 4 search runs of 8 epochs + 3 repeats x (8 + 8 + 16 + 32 epochs): 28 runs' worth of 8 epochs, 280 s
    assert "(16 training runs (28 runs' worth at params.yaml's size), about 5 min here (10 s per run measured))" in page


def test_evidence_on_other_data_is_listed_stale_and_never_governs(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 12, "b": 8})
    (root / "evidence" / "study" / "record.json").write_text(json.dumps(Record("elpv.dir", {}).to_json()))
    answer, _ = write_page(root)
    assert answer.governing == "c"
    page = (root / "reports" / "answer.md").read_text()
    assert "stale: other data" in page and "Not current: the study's evidence is stale" in page
    assert "“a”" in page  # the majority class is named when it is one


def test_a_params_change_since_the_run_makes_the_single_pair_stale(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["image_size"] = 64
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    answer, _ = write_page(root)
    assert answer.governing is None and answer.headline.startswith("No answer yet")
    rung_c = next(r for r in answer.rungs if r.key == "c")
    assert rung_c.status == "stale" and "data.image_size 128 (params.yaml: 64)" in rung_c.reasons


def test_two_forms_come_from_one_source():
    blocks = [("h1", "T"), ("p", "**Bold** and `code` and a <b>"), ("table", [("h",), ("c|d",)])]
    md, html = to_markdown(blocks), to_html(blocks)
    assert md == "# T\n\n**Bold** and `code` and a &lt;b&gt;\n\n| h |\n|---|\n| c\\|d |\n"
    assert "<p><b>Bold</b> and <code>code</code> and a &lt;b&gt;</p>" in html and "<td>c|d</td>" in html


def test_python_m_tvs_page_writes_both_forms_and_prints_the_headline(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})
    done = subprocess.run([sys.executable, "-m", "tvs.page", "--root", str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Fine-tune. Governed by rung b") and "\nrung a: not run\n" in done.stdout
    assert (
        "Single pair: pretrained 70.0%, scratch 50.0%." in done.stdout and max(map(len, done.stdout.splitlines())) <= 99
    )
    (root / "metrics" / "comparison.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "tvs.page", "--root", str(root)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "comparison.json: not valid JSON" in done.stderr


def test_control_characters_from_a_class_name_reach_the_terminal_escaped(tmp_path: Path):
    root = fabricated_project(tmp_path, {"\x1b[2J\x1b[31mdefective\x07\n\u202ereversed" + "x" * 200: 12, "b": 8})
    done = subprocess.run([sys.executable, "-m", "tvs.page", "--root", str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [c for c in done.stdout if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")] == []
    assert "“\\x1b[2J\\x1b[31mdefective\\x07\\n\\u202ereversed" in done.stdout.replace("\n  ", " ")
    assert max(map(len, done.stdout.splitlines())) <= 99


def test_make_repro_runs_the_main_pipeline_only_and_ends_with_the_page():
    makefile = (PROJECT / "Makefile").read_text()
    recipe = re.search(r"^repro:.*\n((?:\t.*\n)+)", makefile, re.M)[1].splitlines()
    assert recipe == ["\t$(BIN)/dvc repro dvc.yaml", "\t$(BIN)/python -m tvs.page"]


def test_a_sub_pipeline_that_ran_here_is_kept_as_evidence_with_its_record(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})
    (root / "study" / "reports").mkdir(parents=True)
    (root / "study" / "reports" / "cells.csv").write_text((root / "evidence/study/cells.csv").read_text())
    (root / "study" / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    answer, _ = write_page(root)
    assert json.loads((root / "evidence/study/record.json").read_text()) == {
        "data": "abc.dir",
        "config": {"data.image_size": 64, "lr": 0.001, "train.epochs": 8},
    }
    assert next(r for r in answer.rungs if r.key == "b").status == "stale" and answer.governing == "c"


EVIL_PATH = "a|b/</td><script>alert(1)</script> `x` @octocat\n# FAKE.png"


def with_predictions(root: Path) -> None:
    """The fabricated project with the verdict's diagnostics (an evil file name among the test images) and
    prepare's cache of those images, as after `make repro`."""
    import numpy as np

    from tvs.io import write_csv, write_json
    from tvs.verdict.diagnostics import Scores, diagnose

    paths = np.array([EVIL_PATH, "a/1.png", "b/2.png", "b/3.png"])
    true = np.array([0, 0, 1, 1])
    pre = Scores(["a", "b"], paths, true, np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    scr = Scores(["a", "b"], paths, true, np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.3, 0.7]]))
    content, _ = diagnose({"pretrained": pre, "scratch": scr})
    write_json(root / "reports" / "plots" / "diagnostics.json", content)
    manifest = pd.DataFrame({"path": [*paths, "a/t.png", "b/v.png"], "class": ["a", "a", "b", "b", "a", "b"],
                             "sha1": "0", "split": ["test"] * 4 + ["train", "val"]})  # fmt: skip
    write_csv(manifest, root / "data" / "prepared" / "manifest.csv")
    images = np.zeros((6, 3, 16, 16), dtype=np.uint8)
    images[:, 0] = 200  # red: the thumbnails are these pixels
    np.save(root / "data" / "prepared" / "images.npy", images)


def test_the_gallery_shows_both_mcnemar_cells_with_thumbnails_and_escapes_file_names(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})
    with_predictions(root)
    write_page(root)
    md = (root / "reports" / "answer.md").read_text()
    assert (
        "**pretrained right, scratch wrong: 1 images**" in md and "**scratch right, pretrained wrong: 1 images**" in md
    )
    assert "<script>" not in md and "</td>" not in md and "\n# FAKE" not in md and " @octocat" not in md
    assert "| a\\|b/&lt;/td&gt;&lt;script&gt;" in md  # the file name stays one cell
    assert "| a | a (90%) | b (80%) |" in md  # true class, then the right arm's and the wrong arm's predictions
    html = (root / "reports" / "answer.html").read_text()
    assert "<script>" not in html and "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    thumbs = re.findall(r'<img class="thumb" alt="[^"]*" src="data:image/jpeg;base64,([^"]+)">', html)
    assert len(thumbs) >= 3  # both cells' images and the highest-loss ones
    import base64
    import io

    pixel = Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).convert("RGB").getpixel((8, 8))
    assert pixel[0] > 150 and pixel[1] < 60  # the cache's red pixels, not a placeholder


def test_no_thumbnails_from_a_cache_the_single_pair_was_not_run_on(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})
    with_predictions(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["image_size"] = 64  # the prepared cache no longer matches what was evaluated
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_page(root)
    html = (root / "reports" / "answer.html").read_text()
    assert 'class="thumb"' not in html and "Where the arms disagree" in html
    assert "Thumbnails appear in the HTML page when" in (root / "reports" / "answer.md").read_text()


@pytest.mark.e2e
@needs_chromium
def test_the_committed_html_page_draws_every_section_offline_in_chromium(tmp_path: Path):
    """reports/answer.html in headless Chromium, every host unresolvable: its DOM has every section, and
    the screenshot shows the inline curve (many colours), not a page of text alone."""
    page = PROJECT / "reports" / "answer.html"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *OFFLINE,
            f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and dom.stdout, dom.stderr[-2000:]
    headings = ("Fine-tune or train from scratch?", "The evidence ladder", "Beneath the answer",
                "The single pair (rung c)", "Confusion matrix, pretrained", "Confusion matrix, scratch",
                "Calibration and ranking (test split)", "Where the arms disagree (test split)",
                "pretrained right, scratch wrong", "scratch right, pretrained wrong")  # fmt: skip
    for heading in headings:
        assert heading in dom.stdout, heading
    assert dom.stdout.count("<table>") >= 10 and dom.stdout.count('src="data:image/png;base64,') == 3  # 3 figures
    assert dom.stdout.count('<img class="thumb"') >= 16  # the gallery's thumbnails, inline
    assert not re.search(r'src="(?!data:)', dom.stdout)  # every image inline: nothing to fetch
    shot = tmp_path / "page.png"
    done = subprocess.run([*base, "--window-size=1000,2400", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, len(colours or [])  # the plot drew: text alone has few


def test_a_measured_rungs_next_step_is_one_more_repeat_not_the_command_that_would_run_nothing(tmp_path: Path):
    root = fabricated_project(tmp_path, {"a": 10, "b": 10})  # rung b measured and current; 10 s per run
    (root / "study" / "params.yaml").parent.mkdir(exist_ok=True)
    (root / "study" / "params.yaml").write_text(yaml.safe_dump({"fractions": [0.5, 1.0], "seeds": [0, 1, 2]}))
    answer, _ = write_page(root)
    rung_b = next(rung for rung in answer.rungs if rung.key == "b")
    assert rung_b.status == "measured"
    # a seed more is one pair per fraction: 4 runs; `dvc repro study/dvc.yaml` alone would run nothing
    assert rung_b.next_step == (
        "one more entry in study/params.yaml's `seeds`, then `dvc repro study/dvc.yaml` "
        "(4 training runs, about 40 s here (10 s per run measured))"
    )
    rung_a = next(rung for rung in answer.rungs if rung.key == "a")  # not run: the command that runs it
    assert rung_a.status == "not run" and rung_a.next_step.startswith("`dvc repro tune/dvc.yaml`")
