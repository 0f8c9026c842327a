"""The embedded default dataset: a deterministic export of the elpv-dataset package."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tvs.elpv import class_of, elpv_root, export_elpv, read_labels
from tvs.errors import DataError

from .conftest import ENV, PROJECT, dvc, run_ok, write_imagefolder


def test_labels_hold_all_2624_cells_at_four_probability_levels():
    labels = read_labels(elpv_root())
    assert len(labels) == 2624
    assert sorted(labels["probability"].round(4).unique()) == [0.0, 0.3333, 0.6667, 1.0]


@pytest.mark.parametrize(
    ("probability", "binary", "levels"),
    [
        (0.0, "functional", "p0.00"),
        (1 / 3, "functional", "p0.33"),
        (2 / 3, "defective", "p0.67"),
        (1.0, "defective", "p1.00"),
    ],
)
def test_class_of_each_probability(probability, binary, levels):
    assert class_of(probability, "binary") == binary
    assert class_of(probability, "levels") == levels


@pytest.mark.e2e  # runs git and dvc
def test_export_copies_png_bytes_unchanged_and_matches_the_committed_dvc_hash(tmp_path: Path):
    repo = tmp_path / "repo"
    assert export_elpv(repo / "data" / "raw") == 2624
    raw = repo / "data" / "raw"
    assert len(list((raw / "functional").iterdir())) == 1803 and len(list((raw / "defective").iterdir())) == 821
    assert filecmp.cmp(raw / "defective" / "cell0001.png", elpv_root() / "images" / "cell0001.png", shallow=False)
    run_ok(["git", "init", "-q"], repo)
    dvc(repo, "init", "-q")
    dvc(repo, "add", "-q", "data/raw")  # the own-data way, which must give the same hash as the stage
    ours = yaml.safe_load((repo / "data" / "raw.dvc").read_text())["outs"][0]
    committed = yaml.safe_load((PROJECT / "data" / "dvc.lock").read_text())["stages"]["elpv"]["outs"][0]
    assert committed["path"] == "raw" and ours["md5"] == committed["md5"] and ours["nfiles"] == 2624


def test_levels_scheme_exports_four_classes(tmp_path: Path):
    export_elpv(tmp_path / "raw", scheme="levels")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["p0.00", "p0.33", "p0.67", "p1.00"]


def test_export_never_overwrites_other_data_and_names_it(tmp_path: Path):
    (tmp_path / "raw" / "mine").mkdir(parents=True)
    (tmp_path / "raw" / "mine" / "a.png").write_bytes(b"x")
    (tmp_path / "raw" / ".hidden").write_bytes(b"y")
    with pytest.raises(DataError, match=r"raw: holds 2 file\(s\) that are not an ELPV export \(.hidden, mine/a.png\)"):
        export_elpv(tmp_path / "raw")
    assert (tmp_path / "raw" / "mine" / "a.png").read_bytes() == b"x"
    assert (tmp_path / "raw" / ".hidden").read_bytes() == b"y"
    assert not (tmp_path / "raw.partial").exists()


def test_an_image_of_yours_among_an_earlier_export_stops_it_too(tmp_path: Path):
    export_elpv(tmp_path / "raw")
    (tmp_path / "raw" / "defective" / "my_cell.png").write_bytes(b"x")
    with pytest.raises(DataError, match="dvc remove data/dvc.yaml:elpv"):
        export_elpv(tmp_path / "raw", scheme="levels")
    assert (tmp_path / "raw" / "defective" / "my_cell.png").read_bytes() == b"x"
    assert len(list((tmp_path / "raw" / "defective").iterdir())) == 822  # nothing of the old export went


def test_a_file_where_the_folder_should_be_is_not_replaced(tmp_path: Path):
    (tmp_path / "raw").write_bytes(b"notes")
    with pytest.raises(DataError, match="not an ELPV export"):
        export_elpv(tmp_path / "raw")
    assert (tmp_path / "raw").read_bytes() == b"notes"


def test_an_earlier_export_of_either_scheme_is_replaced_whole(tmp_path: Path):
    export_elpv(tmp_path / "raw", scheme="levels")
    (tmp_path / "raw.partial" / "p0.00").mkdir(parents=True)  # what a killed export leaves
    assert export_elpv(tmp_path / "raw") == 2624
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["defective", "functional"]
    assert sum(1 for _ in (tmp_path / "raw").rglob("*.png")) == 2624
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no partial or replaced folder left


@pytest.mark.e2e  # runs dvc
def test_the_stage_refuses_images_of_yours_in_data_raw_and_deletes_nothing(tmp_path: Path):
    """Copied in without `dvc remove data/dvc.yaml:elpv` first: DVC reruns the export, which stops."""
    repo = tmp_path / "repo"
    for rel in ("data/dvc.yaml", "requirements.lock", ".dvc/config", ".dvc/.gitignore"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT / rel, repo / rel)
    shutil.copytree(PROJECT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run_ok(["git", "init", "-q"], repo)
    dvc(repo, "repro", "-q", "data/dvc.yaml")
    shutil.rmtree(repo / "data" / "raw")
    write_imagefolder(repo / "data" / "raw", {"cats": 2, "dogs": 2})

    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "data/dvc.yaml"], cwd=repo, env=ENV, capture_output=True, text=True
    )

    assert proc.returncode != 0
    documented = (
        (PROJECT / "docs" / "reliability.md").read_text().split("| stops; nothing in `data/raw` is touched | `")[1]
    )
    assert documented.split("` |\n", 1)[0] in proc.stderr.splitlines()  # the line docs/reliability.md shows
    assert sorted(p.relative_to(repo / "data" / "raw").as_posix() for p in (repo / "data" / "raw").rglob("*.png")) == [
        "cats/img000.png", "cats/img001.png", "dogs/img000.png", "dogs/img001.png"
    ]  # fmt: skip
