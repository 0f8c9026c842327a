"""Scanning, checking, splitting and caching an ImageFolder; the nested training subsets."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tvs.config import DataConfig, load_params
from tvs.data.prepare import build_cache, decode_image, prepare_dataset
from tvs.data.prepared import PreparedData, load_prepared
from tvs.data.scan import scan_image_folder
from tvs.data.split import UNUSED, make_manifest, nested_train_subset, split_indices, training_sizes, training_subset
from tvs.errors import DataError

from .conftest import write_imagefolder, write_params


def test_scan_lists_files_per_class_sorted_and_ignores_hidden_entries(imagefolder: Path):
    (imagefolder / "cats" / ".DS_Store").write_text("x")
    (imagefolder / ".git").mkdir()
    (imagefolder / ".git" / "config").write_text("x")
    samples = scan_image_folder(imagefolder)
    assert [s.label for s in samples] == ["cats"] * 12 + ["dogs"] * 12
    assert samples[0].path == "cats/img000.png"
    assert not any(".DS_Store" in s.path for s in samples)


def test_missing_folder_and_empty_class_are_named(tmp_path: Path):
    with pytest.raises(DataError, match=r"raw: no such folder.*make data"):
        scan_image_folder(tmp_path / "raw")
    write_imagefolder(tmp_path / "raw", {"a": 3})
    (tmp_path / "raw" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) with no files: b"):
        scan_image_folder(tmp_path / "raw")


def test_split_is_stratified_seeded_and_disjoint():
    labels = ["a"] * 40 + ["b"] * 20
    splits = split_indices(labels, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert splits == split_indices(labels, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert splits != split_indices(labels, val_fraction=0.2, test_fraction=0.25, seed=4)
    table = pd.DataFrame({"label": labels, "split": splits})
    counts = table.groupby(["label", "split"]).size().to_dict()
    assert counts == {
        ("a", "test"): 10, ("a", "val"): 8, ("a", "train"): 22,
        ("b", "test"): 5, ("b", "val"): 4, ("b", "train"): 11,
    }  # fmt: skip
    assert set(splits) == {"train", "val", "test"}  # every item in exactly one split


def test_a_class_too_small_to_split_is_named():
    with pytest.raises(DataError, match=r"too few images.*'tiny' \(2 images\)"):
        split_indices(["big"] * 10 + ["tiny"] * 2, 0.2, 0.2, seed=0)


def test_train_fraction_subsets_are_stratified_and_nested():
    manifest = pd.DataFrame({"class": ["a"] * 50 + ["b"] * 10, "split": ["train"] * 55 + ["test"] * 5})
    small = nested_train_subset(manifest, 0.1, seed=1)
    large = nested_train_subset(manifest, 0.5, seed=1)
    assert small.sum() == 5 + 1 and large.sum() == 25 + 3  # ceil per class, at least one each
    assert (small <= large).all()  # nested
    assert not (small & (manifest["split"] != "train")).any()
    assert not small.equals(nested_train_subset(manifest, 0.1, seed=2))


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("L", (30, 40)), ("RGB", (50, 20)), ("RGBA", (16, 16)), ("P", (10, 10)), ("CMYK", (12, 12)), ("I;16", (20, 20))],
)
def test_decode_turns_any_mode_and_shape_into_square_rgb_uint8(tmp_path: Path, mode: str, shape: tuple):
    img = Image.new(mode, shape[::-1])
    if mode == "I;16":
        img = Image.fromarray(np.linspace(0, 65535, shape[0] * shape[1]).reshape(shape).astype(np.uint16))
    path = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"
    img.save(path)
    arr = decode_image(path.read_bytes(), 8)
    assert arr.shape == (3, 8, 8) and arr.dtype == np.uint8
    if mode == "I;16":
        assert arr.max() > 200 and arr.min() < 50  # scaled to 8 bits, not clipped


def test_cache_rows_match_the_manifest_and_decode_once(imagefolder: Path, tmp_path: Path):
    samples = scan_image_folder(imagefolder)
    table, bad = build_cache(imagefolder, samples, 16, tmp_path / "out" / "images.npy")
    assert bad == [] and list(table["path"]) == [s.path for s in samples]
    images = np.load(tmp_path / "out" / "images.npy", mmap_mode="r")
    assert images.shape == (24, 3, 16, 16)
    expected = decode_image((imagefolder / samples[5].path).read_bytes(), 16)
    assert np.array_equal(images[5], expected)
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "images.npy"]  # no temp files left


def test_unreadable_files_fail_by_default_and_can_be_skipped(imagefolder: Path, tmp_path: Path):
    (imagefolder / "cats" / "notes.txt").write_text("not an image")
    (imagefolder / "dogs" / "broken.png").write_bytes((imagefolder / "dogs" / "img000.png").read_bytes()[:40])
    samples = scan_image_folder(imagefolder)
    out = tmp_path / "out" / "images.npy"
    with pytest.raises(DataError, match=r"2 file\(s\) could not be read.*cats/notes\.txt.*dogs/broken\.png"):
        build_cache(imagefolder, samples, 16, out)
    assert not out.exists()
    table, bad = build_cache(imagefolder, samples, 16, out, on_invalid="skip")
    assert len(table) == 24 and len(bad) == 2
    assert np.load(out).shape[0] == 24


def test_prepare_dataset_writes_manifest_cache_and_summary(imagefolder: Path, tmp_path: Path, tiny_params_file):
    params = load_params(tiny_params_file)
    summary = prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    data = load_prepared(tmp_path / "prep")
    assert data.classes == ["cats", "dogs"]
    assert summary == {
        "images": 24, "classes": 2, "skipped_files": 0, "stray_files": 0, "duplicate_groups": 0,
        "duplicate_images": 0, "upscaled_images": 24, "train_images": 12, "val_images": 6, "test_images": 6,
    }  # fmt: skip
    rows, labels = data.split("train")
    assert len(rows) == 12 and set(labels) == {0, 1}
    assert data.images.shape == (24, 3, 32, 32)
    # Row i of the cache is the image of manifest row i, and a split's labels are its rows' classes.
    for i in (0, 13, 23):
        expected = decode_image((imagefolder / data.manifest.loc[i, "path"]).read_bytes(), 32)
        assert np.array_equal(data.images[i], expected)
    rows, labels = data.split("test")
    assert [data.classes[y] for y in labels] == list(data.manifest.loc[rows, "class"])


def test_prepare_keeps_every_training_image_whatever_the_train_fraction(imagefolder: Path, tmp_path: Path):
    # data.train_fraction is training's knob: changing it must not change what prepare writes.
    written = {}
    for fraction in (1.0, 0.5):
        params = load_params(write_params(tmp_path / "params.yaml"), overrides={"data.train_fraction": fraction})
        out = tmp_path / f"prep{fraction}"
        summary = prepare_dataset(raw=imagefolder, out=out, params=params, summary_path=tmp_path / f"{fraction}.json")
        written[fraction] = ((out / "manifest.csv").read_bytes(), (out / "images.npy").read_bytes(), summary)
    assert written[0.5] == written[1.0]
    assert set(load_prepared(tmp_path / "prep0.5").manifest["split"]) == {"train", "val", "test"}


def test_a_single_class_is_refused(tmp_path: Path, tiny_params_file):
    raw = write_imagefolder(tmp_path / "raw", {"only": 6})
    with pytest.raises(DataError, match=r"only one class \('only'\)"):
        prepare_dataset(raw=raw, out=tmp_path / "p", params=load_params(tiny_params_file), summary_path=tmp_path / "s")


def test_the_manifest_puts_every_image_not_in_val_or_test_into_train():
    table = pd.DataFrame({"path": [f"{i}" for i in range(20)], "class": ["a"] * 10 + ["b"] * 10, "sha1": ""})
    manifest = make_manifest(table, DataConfig(val_fraction=0.2, test_fraction=0.2, train_fraction=0.5), seed=0)
    assert manifest["split"].value_counts().to_dict() == {"train": 12, "val": 4, "test": 4}
    assert manifest.equals(make_manifest(table, DataConfig(val_fraction=0.2, test_fraction=0.2), seed=0))


def prepared_data(per_class: dict[str, int], seed: int = 7) -> PreparedData:
    """A prepared dataset of ``per_class`` images (blank pixels), split 60/20/20."""
    rows = [{"path": f"{c}/{i}.png", "class": c, "sha1": f"{c}{i}"} for c, n in per_class.items() for i in range(n)]
    manifest = make_manifest(pd.DataFrame(rows), DataConfig(val_fraction=0.2, test_fraction=0.2), seed=seed)
    return PreparedData(manifest, sorted(per_class), np.zeros((len(manifest), 3, 2, 2), dtype=np.uint8))


FULL = prepared_data({"a": 60, "b": 30})


def train_paths(data: PreparedData) -> set[str]:
    return set(data.manifest.loc[data.manifest["split"] == "train", "path"])


def test_training_subsets_are_nested_stratified_and_leave_val_and_test_alone():
    drawn = []
    full_per_class = FULL.manifest[FULL.manifest["split"] == "train"].groupby("class").size()
    for seed in (1, 2):
        previous: set[str] = set()
        for fraction in (0.1, 0.25, 0.5, 1.0):
            cut = training_subset(FULL, fraction, seed)
            kept = train_paths(cut)
            assert previous <= kept  # nested: a smaller subset is inside the larger one
            previous = kept
            for split in ("val", "test"):
                assert (cut.manifest["split"] == split).equals(FULL.manifest["split"] == split)
            per_class = cut.manifest[cut.manifest["split"] == "train"].groupby("class").size()
            assert per_class.to_dict() == {c: math.ceil(n * fraction) for c, n in full_per_class.items()}
            assert set(cut.manifest["split"]) <= {"train", "val", "test", UNUSED}
            assert training_sizes(FULL.manifest, fraction)[0] == len(kept)  # what the study reports
        drawn.append(train_paths(training_subset(FULL, 0.25, seed)))
    assert drawn[0] != drawn[1]  # each seed draws its own subset
    assert training_subset(FULL, 1.0, seed=3) is FULL
    assert FULL.manifest["split"].value_counts()["train"] == 54  # the input is not modified


def test_training_sizes_count_images_and_their_mean_per_class():
    n, per_class = training_sizes(FULL.manifest, 0.5)
    assert n == math.ceil(36 * 0.5) + math.ceil(18 * 0.5)
    assert per_class == n / 2
