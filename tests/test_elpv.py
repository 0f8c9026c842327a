"""The embedded default dataset: a deterministic export of the elpv-dataset package."""

import filecmp
from pathlib import Path

import pytest
import yaml

from tvs.elpv import class_of, elpv_root, export_elpv, read_labels
from tvs.errors import DataError

from .conftest import PROJECT, dvc, run_ok


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
    dvc(repo, "add", "-q", "data/raw")
    ours = yaml.safe_load((repo / "data" / "raw.dvc").read_text())["outs"][0]
    committed = yaml.safe_load((PROJECT / "data" / "raw.dvc").read_text())["outs"][0]
    assert ours["md5"] == committed["md5"] and ours["nfiles"] == 2624


def test_levels_scheme_exports_four_classes(tmp_path: Path):
    export_elpv(tmp_path / "raw", scheme="levels")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["p0.00", "p0.33", "p0.67", "p1.00"]


def test_export_never_overwrites_existing_data(tmp_path: Path):
    (tmp_path / "raw" / "mine").mkdir(parents=True)
    (tmp_path / "raw" / "mine" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match="exists and is not empty"):
        export_elpv(tmp_path / "raw")
    assert (tmp_path / "raw" / "mine" / "a.png").read_bytes() == b"x"
