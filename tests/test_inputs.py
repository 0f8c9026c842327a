"""Inputs that used to slip through `prepare` (or hang it): odd names, re-encoded duplicates, a class
emptied by skipping, links out, special and huge files, NaN pixels, EXIF rotation, several problems
at once. Each case checks the exact text the user sees."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tvs.cli import one_line
from tvs.config import load_params
from tvs.data.prepare import decode_image, prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.data.scan import SKIP_HINT, check_before_dvc_add
from tvs.errors import DataError

from .conftest import PROJECT, make_image, write_imagefolder, write_params


def prepare(raw: Path, tmp_path: Path, **overrides) -> dict:
    params = load_params(write_params(tmp_path / "params.yaml"), overrides=overrides)
    return prepare_dataset(raw=raw, out=tmp_path / "prep", params=params, summary_path=tmp_path / "prepare.json")


def refusal(raw: Path, tmp_path: Path, **overrides) -> str:
    with pytest.raises(DataError) as err:
        prepare(raw, tmp_path, **overrides)
    return str(err.value)


def unreadable(raw: Path, listed: str, n: int = 1) -> str:
    return f"{raw}: {n} file(s) could not be read as images: {listed}. Remove them, {SKIP_HINT}."


# Every character a Linux file name may hold but "/" and NUL, and Unicode's line separators.
ODD_CHARACTERS = [chr(c) for c in range(1, 128) if chr(c) != "/"] + ["\r\n", "\x85", "\u2028", "\u2029"]


def test_a_name_with_any_character_a_file_system_allows_round_trips_through_the_manifest(imagefolder, tmp_path):
    names = [f"cats/a{char}b.png" for char in ODD_CHARACTERS]
    for i, name in enumerate(names):
        make_image(0, 100 + i).save(imagefolder / name)
    prepare(imagefolder, tmp_path)
    data = load_prepared(tmp_path / "prep")  # a lone "\r" used to split a row: "150 images but ... lists 151"
    assert set(names) <= set(data.manifest["path"]) and len(data.manifest) == 24 + len(names)
    row = data.manifest.index[data.manifest["path"] == "cats/a\rb.png"][0]
    assert np.array_equal(data.images[row], decode_image((imagefolder / "cats" / "a\rb.png").read_bytes(), 32))


def test_an_image_resaved_at_another_compression_under_another_class_is_a_label_conflict(imagefolder, tmp_path):
    for i in range(2):  # the same pixels, other bytes
        Image.open(imagefolder / "cats" / f"img00{i}.png").save(imagefolder / "dogs" / f"copy{i}.png", compress_level=1)
    assert refusal(imagefolder, tmp_path) == (
        f"{imagefolder}: 4 files in 2 group(s) of identical images are filed under more than one class "
        "(ambiguous labels that would also leak between splits): cats/img000.png = dogs/copy0.png, "
        f"cats/img001.png = dogs/copy1.png. Remove the wrong copies, {SKIP_HINT}."
    )
    summary = prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})
    assert summary["skipped_files"] == 4 and summary["images"] == 22


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_an_image_resaved_as_bmp_in_its_class_shares_its_split_and_is_counted(imagefolder, tmp_path, caplog, seed):
    for i in range(3):
        Image.open(imagefolder / "cats" / f"img00{i}.png").save(imagefolder / "cats" / f"img00{i}.bmp")
    with caplog.at_level(logging.WARNING):
        summary = prepare(imagefolder, tmp_path, seed=seed)
    assert "3 group(s) of identical images (6 files): each group is kept in one split" in caplog.messages
    assert summary["duplicate_groups"] == 3 and summary["duplicate_images"] == 6
    split = load_prepared(tmp_path / "prep").manifest.set_index("path")["split"]
    assert all(split[f"cats/img00{i}.png"] == split[f"cats/img00{i}.bmp"] for i in range(3))  # no leak


def test_a_class_left_empty_by_skipping_is_an_error_like_an_empty_folder(imagefolder, tmp_path):
    (imagefolder / "birds").mkdir()
    for i in range(3):
        (imagefolder / "birds" / f"b{i}.png").write_text("not an image")
    assert refusal(imagefolder, tmp_path, **{"data.on_invalid": "skip"}) == (
        f"{imagefolder}: class folder(s) with no usable image (every file in them is unreadable or left out): "
        "birds. Add readable images to them, or remove the folders."
    )


def test_links_out_of_the_folder_are_refused_wherever_they_are(imagefolder, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    make_image(0, 50).save(outside / "secret.png")
    (imagefolder / "cats" / ".hidden.png").symlink_to(outside / "secret.png")  # `dvc add` copies hidden files too
    (imagefolder / "notes").symlink_to(outside / "secret.png")  # a stray file at the top level
    (imagefolder / "dogs" / "more").symlink_to(outside, target_is_directory=True)  # a folder os.walk skips
    out = outside.resolve()
    expected = (
        f"{imagefolder}: 3 file(s) are reached through symlinks that point outside the dataset folder: "
        f"cats/.hidden.png -> {out}/secret.png, dogs/more -> {out}, notes -> {out}/secret.png. "
        f"Copy the files into {imagefolder} instead of linking to them."
    )
    for policy in ("error", "skip"):
        assert refusal(imagefolder, tmp_path, **{"data.on_invalid": policy}) == expected


def test_the_check_before_dvc_add_refuses_links_out_and_special_files(imagefolder, tmp_path):
    (imagefolder / "cats" / ".x").symlink_to("/etc/hostname")
    os.mkfifo(imagefolder / "dogs" / "pipe.png")
    expected = (
        f"{imagefolder}: 1 symlink(s) point outside the dataset folder: cats/.x -> {Path('/etc/hostname').resolve()}. "
        "`dvc add` would store a copy of each target with the dataset (and `dvc push` upload it): copy the files "
        f"you mean into {imagefolder} instead of linking to them.\n"
        f"{imagefolder}: 1 special file(s) that `dvc add` would wait on forever or cannot store: dogs/pipe.png "
        "(named pipe). Remove them."
    )
    with pytest.raises(DataError) as err:
        check_before_dvc_add(imagefolder)
    assert str(err.value) == expected
    proc = subprocess.run(
        [sys.executable, "-m", "tvs.data.scan", str(imagefolder)], cwd=PROJECT, capture_output=True, text=True
    )
    assert proc.returncode == 1 and proc.stderr == f"check: error: {one_line(expected)}\n"
    check_before_dvc_add(write_imagefolder(tmp_path / "clean", {"a": 1, "b": 1}))  # a clean folder passes


def _unblock_until_done(worker: threading.Thread, pipe: Path) -> None:
    """Be the writer a reader blocked on ``pipe`` waits for, until ``worker`` ends."""
    while worker.is_alive():
        with contextlib.suppress(OSError):  # no reader at this instant
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(0.1)


def test_a_named_pipe_is_refused_by_its_type_without_waiting_for_a_writer(imagefolder, tmp_path):
    pipe = imagefolder / "cats" / "pipe.png"
    os.mkfifo(pipe)
    outcome: dict[str, str] = {}

    def run() -> None:
        outcome["error"] = refusal(imagefolder, tmp_path)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    blocked = worker.is_alive()
    _unblock_until_done(worker, pipe)
    assert not blocked, "prepare blocked opening a named pipe"
    assert outcome["error"] == unreadable(imagefolder, "cats/pipe.png (a named pipe, not a regular file)")
    assert prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})["skipped_files"] == 1


def test_a_huge_file_that_is_no_image_is_refused_from_its_header_without_reading_it(imagefolder, tmp_path):
    with open(imagefolder / "dogs" / "big.png", "wb") as handle:
        handle.write(b"this is no image")
        handle.truncate(256 << 20)  # sparse: 256 MiB that take no disk
    tracemalloc.start()
    try:
        message = refusal(imagefolder, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == unreadable(imagefolder, "dogs/big.png (not an image format Pillow can read)")
    assert peak < 32 << 20, f"{peak >> 20} MiB allocated: the file was read whole"


def test_a_float_image_with_a_nan_pixel_is_refused_not_turned_black(imagefolder, tmp_path):
    values = np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20)
    values[3, 4] = np.nan
    Image.fromarray(values, mode="F").save(imagefolder / "cats" / "nan.tif")
    assert refusal(imagefolder, tmp_path) == unreadable(
        imagefolder, "cats/nan.tif (ValueError: 1 of 400 pixel values are NaN or infinite)"
    )
    assert prepare(imagefolder, tmp_path, **{"data.on_invalid": "skip"})["skipped_files"] == 1


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(imagefolder, tmp_path):
    stored = make_image(0, 7, size=32)  # bright on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was held sideways; turn 90 degrees clockwise to view
    stored.save(imagefolder / "cats" / "phone.png", exif=exif)
    prepare(imagefolder, tmp_path)  # image_size 32: no resampling, the pixels compare exactly
    data = load_prepared(tmp_path / "prep")
    row = data.manifest.index[data.manifest["path"] == "cats/phone.png"][0]
    upright = np.rot90(np.asarray(stored), k=-1)  # bright at the top
    assert np.array_equal(data.images[row], np.stack([upright] * 3))


def test_every_kind_of_problem_is_reported_in_one_message(imagefolder, tmp_path):
    (imagefolder / "birds").mkdir()
    (imagefolder / "cats" / "notes.txt").write_text("not an image")
    (imagefolder / "dogs" / "link.png").symlink_to("/etc/hostname")
    Image.open(imagefolder / "cats" / "img000.png").save(imagefolder / "dogs" / "copy.bmp")
    problems = [
        f"{imagefolder}: class folder(s) with no files: birds",
        f"{imagefolder}: 1 file(s) are reached through symlinks that point outside the dataset folder: "
        f"dogs/link.png -> {Path('/etc/hostname').resolve()}. Copy the files into {imagefolder} instead of linking "
        "to them.",
        unreadable(imagefolder, "cats/notes.txt (not an image format Pillow can read)"),
        f"{imagefolder}: 2 files in 1 group(s) of identical images are filed under more than one class (ambiguous "
        f"labels that would also leak between splits): cats/img000.png = dogs/copy.bmp. Remove the wrong copies, "
        f"{SKIP_HINT}.",
    ]
    message = refusal(imagefolder, tmp_path)
    assert message == "\n".join(problems)
    assert one_line(message) == " | ".join(problems)  # what the stage prints
