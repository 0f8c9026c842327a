"""Bad input stops `prepare` or `train` early with a message naming the files or key, or is
warned about and counted: each case checks the exact text the user sees."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tvs.config import load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.data.split import split_indices
from tvs.errors import ConfigError, DataError
from tvs.models.archs import build_model
from tvs.train.worker import train_arm

from .conftest import make_image, write_params
from .stage_runner import make_project, one_line_error, run_stage, train_cmd

SKIP_HINT = "or set data.on_invalid: skip to leave them out (the count is recorded in the prepare metrics)"


def prepare(raw: Path, tmp_path: Path, **overrides) -> dict:
    params = load_params(write_params(tmp_path / "params.yaml"), overrides=overrides)
    return prepare_dataset(raw=raw, out=tmp_path / "prep", params=params, summary_path=tmp_path / "prepare.json")


def test_stray_files_at_the_top_level_are_listed_in_a_warning_ignored_and_counted(imagefolder, tmp_path, caplog):
    (imagefolder / "notes.txt").write_text("labels are in the folder names")
    make_image(0, 0).save(imagefolder / "cover.png")
    (imagefolder / ".DS_Store").write_text("hidden: not even mentioned")
    with caplog.at_level(logging.WARNING):
        summary = prepare(imagefolder, tmp_path)
    assert (
        f"{imagefolder}: 2 file(s) at the top level are not in a class folder and are ignored: cover.png, notes.txt"
        in caplog.messages
    )
    assert summary["stray_files"] == 2 and summary["images"] == 24


def test_files_that_are_not_images_or_are_truncated_are_named_or_skipped_with_a_count(imagefolder, tmp_path, caplog):
    (imagefolder / "cats" / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    (imagefolder / "dogs" / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad = "cats/notes.txt (not an image format Pillow can read), dogs/cut.png (OSError: image file is truncated)"
    with pytest.raises(DataError) as err:
        prepare(imagefolder, tmp_path)
    assert str(err.value) == f"{imagefolder}: 2 file(s) could not be read as images: {bad}. Remove them, {SKIP_HINT}."
    with caplog.at_level(logging.WARNING):
        summary = prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})
    assert f"{imagefolder}: left out 2 file(s) (data.on_invalid: skip): {bad}" in caplog.messages
    assert summary["skipped_files"] == 2 and summary["images"] == 24
    assert json.loads((tmp_path / "prepare.json").read_text())["skipped_files"] == 2


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_over_the_decompression_bomb_limit_are_refused_by_name(imagefolder, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the real limit is 89 megapixels; same code path
    Image.new("L", (40, 40)).save(imagefolder / "cats" / "huge.png")  # over the limit: Pillow would only warn
    Image.new("L", (100, 100)).save(imagefolder / "dogs" / "bomb.png")  # over twice the limit: Pillow refuses
    with pytest.raises(DataError) as err:
        prepare(imagefolder, tmp_path)
    assert str(err.value) == (
        f"{imagefolder}: 2 file(s) could not be read as images: "
        "cats/huge.png (too large: 40x40 = 1600 pixels, over the decompression-bomb limit of 1000 "
        "(PIL.Image.MAX_IMAGE_PIXELS)), "
        "dogs/bomb.png (too large: Image size (10000 pixels) exceeds limit of 2000 pixels, could be decompression "
        f"bomb DOS attack.). Remove them, {SKIP_HINT}."
    )
    assert prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})["skipped_files"] == 2


def test_tiny_images_are_upscaled_with_a_warning_and_non_square_ones_centre_cropped(imagefolder, tmp_path, caplog):
    Image.new("L", (1, 1), color=200).save(imagefolder / "cats" / "tiny.png")
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 15:45] = 255  # the centre square (and a margin for the resampling filter) is white
    Image.fromarray(wide).save(imagefolder / "dogs" / "wide.png")
    with caplog.at_level(logging.WARNING):
        summary = prepare(imagefolder, tmp_path, **{"data.image_size": 16})
    assert (
        "1 image(s) are smaller than data.image_size (16 px) on their short side and are upscaled: cats/tiny.png"
        in caplog.messages
    )
    assert summary["upscaled_images"] == 1 and summary["images"] == 26
    data = load_prepared(tmp_path / "prep")
    row = {path: i for i, path in enumerate(data.manifest["path"])}
    assert (data.images[row["cats/tiny.png"]] == 200).all()
    assert (data.images[row["dogs/wide.png"]] == 255).all()  # the black sides were cropped away


def test_symlinks_that_leave_the_dataset_are_refused_even_when_skipping(imagefolder, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    make_image(0, 50).save(outside / "secret.png")
    (imagefolder / "cats" / "link.png").symlink_to(outside / "secret.png")
    (imagefolder / "birds").symlink_to(outside, target_is_directory=True)  # a whole class folder
    (imagefolder / "dogs" / "alias.png").symlink_to(imagefolder / "dogs" / "img000.png")  # inside: fine
    expected = (
        f"{imagefolder}: 2 file(s) are reached through symlinks that point outside the dataset folder: "
        f"birds/secret.png -> {outside.resolve()}/secret.png, cats/link.png -> {outside.resolve()}/secret.png. "
        f"Copy the files into {imagefolder} instead of linking to them."
    )
    for policy in ("error", "skip"):
        with pytest.raises(DataError) as err:
            prepare(imagefolder, tmp_path, **{"data.on_invalid": policy})
        assert str(err.value) == expected


ODD_NAMES = ["with space.png", "ünïcødé 猫.png", 'comma, "quote".png', "new\nline.png", "NA.png", "-1.png"]


def test_odd_file_names_round_trip_through_the_manifest(imagefolder, tmp_path):
    for i, name in enumerate(ODD_NAMES):
        make_image(0, 100 + i).save(imagefolder / "cats" / name)
    prepare(imagefolder, tmp_path)
    paths = set(load_prepared(tmp_path / "prep").manifest["path"])
    assert {f"cats/{name}" for name in ODD_NAMES} <= paths and len(paths) == 24 + len(ODD_NAMES)


def test_file_names_that_are_not_utf8_are_refused_or_skipped_and_shown_escaped(imagefolder, tmp_path):
    with open(os.fsencode(imagefolder / "cats") + b"/caf\xe9.png", "wb") as handle:  # Latin-1, not UTF-8
        make_image(0, 99).save(handle, format="PNG")
    with pytest.raises(DataError) as err:
        prepare(imagefolder, tmp_path)
    assert str(err.value) == (
        f"{imagefolder}: 1 file name(s) are not valid UTF-8, so the manifest cannot record them: "
        f"cats/caf\\xe9.png. Rename them, {SKIP_HINT}."
    )
    summary = prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})
    assert summary["skipped_files"] == 1 and summary["images"] == 24


def test_identical_images_under_two_classes_are_refused_listing_first_ten_and_a_count(imagefolder, tmp_path):
    for i in range(12):
        shutil.copy(imagefolder / "cats" / f"img{i:03d}.png", imagefolder / "dogs" / f"copy{i:02d}.png")
    with pytest.raises(DataError) as err:
        prepare(imagefolder, tmp_path)
    groups = ", ".join(f"cats/img{i:03d}.png = dogs/copy{i:02d}.png" for i in range(10))
    assert str(err.value) == (
        f"{imagefolder}: 24 files in 12 group(s) of identical images are filed under more than one class "
        f"(ambiguous labels that would also leak between splits): {groups} (and 2 more). "
        f"Remove the wrong copies, {SKIP_HINT}."
    )


def test_skipping_drops_every_copy_of_a_conflicting_image_and_counts_it(imagefolder, tmp_path):
    for i in range(2):
        shutil.copy(imagefolder / "cats" / f"img{i:03d}.png", imagefolder / "dogs" / f"copy{i}.png")
    summary = prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})
    assert summary["skipped_files"] == 4 and summary["images"] == 22
    assert not {"cats/img000.png", "dogs/copy0.png"} & set(load_prepared(tmp_path / "prep").manifest["path"])


def test_copies_within_a_class_share_one_split_and_are_counted(imagefolder, tmp_path, caplog):
    for name in ("dup_a.png", "dup_b.png"):
        shutil.copy(imagefolder / "cats" / "img000.png", imagefolder / "cats" / name)
    shutil.copy(imagefolder / "dogs" / "img005.png", imagefolder / "dogs" / "again.png")
    with caplog.at_level(logging.WARNING):
        summary = prepare(imagefolder, tmp_path)
    assert "2 group(s) of identical images (5 files): each group is kept in one split" in caplog.messages
    assert summary["duplicate_groups"] == 2 and summary["duplicate_images"] == 5
    manifest = load_prepared(tmp_path / "prep").manifest
    assert manifest.groupby("sha1")["split"].nunique().max() == 1


def test_split_keeps_groups_together_for_every_seed_and_is_unchanged_without_duplicates():
    labels = ["a"] * 20 + ["b"] * 10
    groups = ["x"] * 4 + [""] * 16 + ["y", "y"] + [""] * 8  # "" means: no known copy
    for seed in range(20):
        splits = split_indices(labels, 0.2, 0.2, seed, groups=groups)
        assert len(set(splits[:4])) == 1 and splits[20] == splits[21]
        assert {s for s, lab in zip(splits, labels, strict=True) if lab == "a"} == {"train", "val", "test"}
        assert split_indices(labels, 0.2, 0.2, seed, groups=[""] * 30) == split_indices(labels, 0.2, 0.2, seed)


def test_a_class_of_identical_images_is_too_small_to_split():
    with pytest.raises(DataError, match=r"too few images to split.*'a' \(6 images but only 1 distinct\)"):
        split_indices(["a"] * 6 + ["b"] * 6, 0.2, 0.2, seed=0, groups=["same"] * 6 + [""] * 6)


def test_a_batch_larger_than_the_training_split_stops_training_before_any_work(imagefolder, tmp_path):
    prepare(imagefolder, tmp_path)
    params = load_params(write_params(tmp_path / "big.yaml", train={"batch_size": 13}))
    with pytest.raises(ConfigError) as err:
        train_arm(arm="scratch", data_dir=tmp_path / "prep", out=tmp_path / "m", params=params, live_dir=tmp_path / "l")
    assert str(err.value) == (
        "train.batch_size: 13 exceeds the 12 training images; lower it "
        "(the split fractions and data.train_fraction set the training split's size)"
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "l").exists()


def test_an_unknown_arch_stops_training_naming_the_closest_valid_ones(imagefolder, tmp_path):
    prepare(imagefolder, tmp_path)
    params = load_params(write_params(tmp_path / "arch.yaml", model={"arch": "vgg99"}))
    with pytest.raises(ConfigError) as err:
        train_arm(arm="scratch", data_dir=tmp_path / "prep", out=tmp_path / "m", params=params, live_dir=tmp_path / "l")
    assert str(err.value) == (
        "model.arch: unknown architecture 'vgg99'; closest: timm:vgg19, torchvision:vgg19, timm:vgg19_bn "
        "(any timm:<name> or torchvision:<name> classification model)"
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "l").exists()


@pytest.mark.e2e
def test_weights_that_do_not_fit_the_arch_stop_the_stage_with_one_line(imagefolder: Path, tmp_path: Path):
    from safetensors.torch import save_file

    project = make_project(tmp_path / "project", imagefolder, model={"weights": "weights/resnet.safetensors"})
    save_file(build_model("resnet18", 1000).state_dict(), project / "weights" / "resnet.safetensors")
    proc = run_stage(project, train_cmd("pretrained"))
    assert one_line_error(proc) == (
        "train: error: model.weights: weights/resnet.safetensors: weights do not fit tf_efficientnet_lite0: "
        "289 missing, 117 unexpected, 4 of the wrong shape; first: ['blocks.0.0.bn1.bias', "
        "'blocks.0.0.bn1.num_batches_tracked', 'blocks.0.0.bn1.running_mean', 'blocks.0.0.bn1.running_var', "
        "'blocks.0.0.bn1.weight']; use weights of tf_efficientnet_lite0, or set model.arch to theirs"
    )
    assert not (project / "models" / "pretrained" / "model.safetensors").exists()


@pytest.mark.e2e
def test_cuda_on_a_machine_without_cuda_stops_the_stage_with_one_line(imagefolder: Path, tmp_path: Path):
    project = make_project(tmp_path / "project", imagefolder, train={"device": "cuda"})
    proc = run_stage(project, train_cmd("scratch"), env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU, whatever the machine
    assert one_line_error(proc) == (
        "train: error: train.device: cuda requested but CUDA is not available; use 'auto' or 'cpu'"
    )
    assert not (project / "models").exists() and not (project / "dvclive").exists()
