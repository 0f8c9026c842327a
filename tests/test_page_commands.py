"""The answer page's next steps, taken as a user takes them: after the README's own-data steps, each
command the page names for a stronger rung, literally, in a fresh shell, then the page again. It must
end with one page about the user's data only, governed by the strongest rung.

Slow: the grids run at their committed size (44 training runs and 25 evaluations, 10 to 15 minutes
on 2 cores even on tiny images), so `make test` leaves it out; `make test-slow` runs it, and CI
(`.ci/run`) runs both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import fresh_shell, run_ok, write_imagefolder
from .test_readme_commands import clone, readme_block  # noqa: F401 (a fixture: the README's fresh checkout)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMED = re.compile(r"`dvc repro (\w+/dvc\.yaml)`[^|]*?\((\d+) training runs")


def test_the_commands_the_page_names_end_with_one_page_about_the_users_data(clone: Path, tmp_path: Path):  # noqa: F811
    # The user's configuration, held as the committed files hold it (tests/test_tune.py): the tuning grid
    # at params.yaml's size, scratch at 1x, 2x and 4x its epochs. The grids keep their committed cells.
    params = yaml.safe_load((clone / "params.yaml").read_text())
    size, epochs = params["data"]["image_size"], params["train"]["epochs"]
    tune = yaml.safe_load((clone / "tune" / "params.yaml").read_text())
    tune.update(image_size=size, epochs=epochs, scratch_epochs=[epochs, 2 * epochs, 4 * epochs])
    (clone / "tune" / "params.yaml").write_text(yaml.safe_dump(tune, sort_keys=False))
    run_ok(["git", "commit", "-qam", "tuning grid at params.yaml's size"], clone)

    images = write_imagefolder(tmp_path / "my_images", {"cats": 30, "dogs": 30})
    own_data = readme_block("## Bringing your own data", "source .venv/bin/activate")
    done = fresh_shell(own_data.replace("/path/to/my_images", str(images)), clone)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (clone / "reports" / "answer.md").read_text()
    assert "Governed by rung c" in page, page
    named = NAMED.findall(page)
    assert sorted(pipeline for pipeline, _ in named) == ["study/dvc.yaml", "tune/dvc.yaml"], page

    for pipeline, runs in named:  # each as the page writes it, in a fresh shell
        ran = fresh_shell(f"source .venv/bin/activate\ndvc repro {pipeline}", clone)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        stages = re.findall(r"Running stage '[^']*?:?([\w@.-]+)'", ran.stdout)
        trained = [s for s in stages if re.match(r"(train|search|final)_(pretrained|scratch)@", s)]
        assert len(trained) == int(runs), (pipeline, runs, trained)  # what the page said it would cost
    refreshed = fresh_shell("source .venv/bin/activate\npython -m tvs.page", clone)
    assert refreshed.returncode == 0, refreshed.stderr

    page = (clone / "reports" / "answer.md").read_text()
    ladder = page.split("## The evidence ladder", 1)[1].split("\n## ", 1)[0]
    assert "Governed by rung a" in page, page  # the strongest rung, now measured and current
    cells = [row.split("|") for row in ladder.splitlines() if row.startswith("| (")]
    rows = {cell[1].strip()[:3]: cell[2].strip() for cell in cells}
    assert rows == {"(a)": "measured (governs)", "(b)": "measured", "(c)": "measured"}, ladder
    assert "stale" not in page and "functional" not in page and "defective" not in page  # nothing about ELPV
    assert "3 repeats" in page and "too few" not in page
    assert json.loads((clone / "metrics" / "prepare.json").read_text())["images"] == 60
    data_hash = yaml.safe_load((clone / "data" / "raw.dvc").read_text())["outs"][0]["md5"]
    for pipeline in ("study", "tune"):  # the evidence kept in git: these 60 images, at params.yaml's size
        record = json.loads((clone / "evidence" / pipeline / "record.json").read_text())
        assert record["data"] == data_hash and record["config"]["data.image_size"] == size, record
    html = (clone / "reports" / "answer.html").read_text()
    assert "Governed by rung a" in html and "defective" not in html
