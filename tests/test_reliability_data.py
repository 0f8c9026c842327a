"""Data-side promises that used to break: every CSV round-trips every name, a tampered manifest is one
line, a full disk during decoding names the folder, memory per image is bounded before decoding, and
the check before `dvc add` reports what `dvc add` would drop or fail on and what `prepare` refuses."""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import tvs
from tvs.cli import one_line
from tvs.config import load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.data.scan import SKIP_HINT, check_before_dvc_add
from tvs.errors import DataError
from tvs.io import read_csv, write_csv
from tvs.verdict.diagnostics import read_scores

from .conftest import PROJECT, write_imagefolder, write_params
from .test_inputs import prepare, refusal, unreadable

SRC = Path(tvs.__file__).resolve().parents[1]  # the package under test: src/ of this working copy
REWRITE = "It is not what `prepare` wrote: restore it with `dvc checkout`, or rerun `dvc repro prepare`."


def prepare_bounded(raw: Path, tmp_path: Path, max_pixels: int) -> dict:
    params = load_params(write_params(tmp_path / "params.yaml"))
    out, summary = tmp_path / "prep", tmp_path / "prepare.json"
    return prepare_dataset(raw=raw, out=out, params=params, summary_path=summary, max_pixels=max_pixels)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG signature and its IHDR chunk: all Pillow reads to tell an image's size."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


# --- every CSV round-trips every name -------------------------------------------------------------

NAMES = ["cats/\r.png", "cats/a\r\nb.png", 'cats/"q",x.png', "cats/NA", "cats/nan", "cats/ lead.png", "cats/\x85"]


def test_every_csv_the_package_writes_goes_through_the_one_writer():
    writers = re.compile(r"\.to_csv\(|csv\.writer\(|csv\.DictWriter\(")
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "tvs" / "io.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if writers.search(line)
    ]
    assert offenders == [], "write CSVs with tvs.io.write_csv"


def test_a_lone_carriage_return_in_a_name_round_trips_through_predictions_and_the_confusion(tmp_path: Path):
    predictions = pd.DataFrame(
        {"path": NAMES, "true": ["ca\rts"] * len(NAMES), "predicted": ["dogs"] * len(NAMES), "p_ca\rts": 0.25}
    )
    predictions.loc[1, "p_ca\rts"] = np.nan
    write_csv(predictions, tmp_path / "predictions.csv")
    back = read_csv(tmp_path / "predictions.csv", text=("path", "true", "predicted"))
    pd.testing.assert_frame_equal(back, predictions, check_dtype=False)
    scores = read_scores(tmp_path / "predictions.csv")  # what verdict's confusion.json and gallery read
    assert scores.classes == ["ca\rts"] and scores.paths.tolist() == list(NAMES) and len(scores.true) == len(NAMES)


def test_a_table_without_odd_names_is_written_as_before(tmp_path: Path):
    table = pd.DataFrame({"path": ["a/1.png", "b/2,x.png"], "p": [0.5, np.nan]})
    write_csv(table, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == table.to_csv(index=False)


# --- a tampered manifest is one line naming it ----------------------------------------------------


def write_prepared(folder: Path, split: list[str] | None = None, **columns) -> Path:
    """A prepared folder of six 8x8 images, two classes, two in each split (``split=None``: no column)."""
    folder.mkdir(parents=True)
    table = {"path": [f"{c}/{i}.png" for i, c in enumerate("ababab")], "class": list("ababab"), "sha1": "0"}
    if split is not None:
        table["split"] = split
    pd.DataFrame({**table, **columns}).to_csv(folder / "manifest.csv", index=False)
    np.save(folder / "images.npy", np.zeros((6, 3, 8, 8), dtype=np.uint8))
    return folder / "manifest.csv"


SPLIT = ["train", "train", "val", "val", "test", "test"]


def test_a_manifest_as_prepare_writes_it_opens(tmp_path: Path):
    write_prepared(tmp_path / "p", SPLIT)
    assert load_prepared(tmp_path / "p").classes == ["a", "b"]


@pytest.mark.parametrize(
    ("case", "split", "problem"),
    [
        ("no test rows", ["train", "train", "val", "val", "val", "val"], "no rows in the test split"),
        ("no split column", None, "no column split (it needs path, class, split)"),
        (
            "unknown split",
            ["train", "train", "val", "val", "test", "tset"],
            "1 row(s) with an unknown split: 'tset' (valid: train, val, test)",
        ),
    ],  # fmt: skip
)
def test_a_tampered_manifest_is_refused_in_one_line_naming_it(tmp_path: Path, case: str, split, problem: str):
    manifest = write_prepared(tmp_path / "p", split)
    with pytest.raises(DataError) as err:
        load_prepared(tmp_path / "p")
    assert one_line(str(err.value)) == f"{manifest}: {problem}. {REWRITE}", case


def test_a_manifest_of_binary_bytes_is_refused_in_one_line_naming_it(tmp_path: Path):
    manifest = write_prepared(tmp_path / "p", SPLIT)
    manifest.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(DataError) as err:
        load_prepared(tmp_path / "p")
    assert one_line(str(err.value)) == (
        f"{manifest}: not a readable CSV table (UnicodeDecodeError: 'utf-8' codec can't decode byte 0x89 in "
        f"position 0: invalid start byte). {REWRITE}"
    )


# --- a full disk while prepare decodes names the folder -------------------------------------------


def test_a_full_disk_while_decoding_names_the_output_folder(imagefolder: Path, tmp_path: Path, monkeypatch):
    class FullDisk:
        name = str(tmp_path / "prep" / ".images.x.raw")

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            pass

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc) -> None:
            return None

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", lambda **kwargs: FullDisk())
    with pytest.raises(OSError) as err:
        prepare(imagefolder, tmp_path)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(tmp_path / "prep"))


# --- memory per image is bounded before decoding --------------------------------------------------


def test_an_image_over_max_pixels_is_refused_from_its_header(imagefolder: Path, tmp_path: Path):
    # 9000x9000 16-bit: under Pillow's bomb limit (89 MP), 1.6 GB to decode; only its header is written here
    stub = png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")
    (imagefolder / "dogs" / "huge.png").write_bytes(png_header(9000, 9000, bit_depth=16, colour=0) + stub)
    assert refusal(imagefolder, tmp_path) == unreadable(
        imagefolder, "dogs/huge.png (too large: 9000x9000 = 81000000 pixels, over the limit of 50000000 "
        "(data.max_pixels))",
    )  # fmt: skip


def test_max_pixels_is_an_argument_of_prepare(imagefolder: Path, tmp_path: Path):
    with pytest.raises(DataError) as err:
        prepare_bounded(imagefolder, tmp_path, max_pixels=24 * 24 - 1)  # the fixture's images are 24x24
    message = str(err.value)
    assert message.startswith(f"{imagefolder}: 24 file(s) could not be read as images: cats/img000.png (too large: ")
    assert "24x24 = 576 pixels, over the limit of 575 (data.max_pixels)" in message
    assert prepare_bounded(imagefolder, tmp_path, max_pixels=24 * 24)["images"] == 24


def with_peak_memory(call: Callable[[], str]) -> tuple[str, int]:
    """``call()`` and the most bytes Python held at once while it ran."""
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_png_with_a_huge_text_chunk_is_refused_without_reading_it(imagefolder: Path, tmp_path: Path):
    size = 100 << 20
    with open(imagefolder / "dogs" / "text.png", "wb") as handle:
        handle.write(png_header(8, 8) + struct.pack(">I", size) + b"tEXt" + b"comment\0")
        handle.truncate(handle.tell() + size)  # sparse: takes no disk
    message, peak = with_peak_memory(lambda: refusal(imagefolder, tmp_path))
    assert message == unreadable(
        imagefolder, "dogs/text.png (too large: 100.0 MiB of PNG metadata (tEXt chunks), over the limit of 64 MiB "
        "(PIL.PngImagePlugin.MAX_TEXT_MEMORY))",
    )  # fmt: skip
    assert peak < 32 << 20, f"{peak >> 20} MiB allocated: the chunk was read"


# --- the check before `dvc add` -------------------------------------------------------------------


def test_the_scan_reports_an_empty_class_a_truncated_png_and_a_text_file_named_jpg(imagefolder: Path):
    (imagefolder / "birds").mkdir()
    data = (imagefolder / "cats" / "img000.png").read_bytes()
    (imagefolder / "cats" / "cut.png").write_bytes(data[: len(data) // 2])
    (imagefolder / "dogs" / "notes.jpg").write_text("not an image")
    expected = (
        f"{imagefolder}: class folder(s) with no files: birds (DVC stores no empty folder: after `dvc add` a clone "
        "would not have them, and `prepare` would train on the other classes without a word). Add images to them, "
        f"or remove them. | {imagefolder}: 2 file(s) could not be read as images: cats/cut.png (OSError: image file "
        f"is truncated), dogs/notes.jpg (not an image format Pillow can read). Remove them, {SKIP_HINT}."
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tvs.data.scan", str(imagefolder)], cwd=PROJECT, capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (1, f"check: error: {expected}\n")


def test_the_scan_reports_identical_images_under_two_classes(imagefolder: Path):
    Image.open(imagefolder / "cats" / "img003.png").save(imagefolder / "dogs" / "copy.bmp")
    with pytest.raises(DataError, match=r"cats/img003.png = dogs/copy.bmp\. Remove the wrong copies"):
        check_before_dvc_add(imagefolder)


def test_the_scan_refuses_names_that_dvc_cannot_store(imagefolder: Path):
    (imagefolder / "cats" / os.fsdecode(b"caf\xe9.png")).write_bytes((imagefolder / "cats" / "img001.png").read_bytes())
    with pytest.raises(DataError) as err:
        check_before_dvc_add(imagefolder)
    assert str(err.value) == (
        f"{imagefolder}: 1 name(s) are not valid UTF-8, which `dvc add` cannot store (it stops with \"'utf-8' codec "
        "can't encode\"): cats/caf\\xe9.png. Rename them."
    )


def test_a_symlink_to_the_dataset_folder_itself_is_not_outside_it(imagefolder: Path):
    (imagefolder / "cats" / "again").symlink_to(imagefolder, target_is_directory=True)
    (imagefolder / "dogs" / "up").symlink_to("..", target_is_directory=True)
    check_before_dvc_add(imagefolder)  # `dvc add` stores no symlinked folder, and prepare follows none


def test_a_hard_link_to_a_file_outside_is_named_in_a_warning(imagefolder: Path, tmp_path: Path, caplog):
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((imagefolder / "cats" / "img000.png").read_bytes())
    os.link(outside, imagefolder / "cats" / "linked.png")
    os.link(imagefolder / "dogs" / "img000.png", imagefolder / "dogs" / "twin.png")  # both names inside: no warning
    with caplog.at_level(logging.WARNING):
        check_before_dvc_add(imagefolder)
    assert [r.getMessage() for r in caplog.records] == [
        f"{imagefolder}: 1 file(s) are hard links to files outside it: cats/linked.png. `dvc add` stores a copy "
        "of each with the dataset, and the link is not kept (the file outside no longer changes with it)."
    ]


def test_a_hidden_file_with_an_image_extension_is_named_in_a_warning(imagefolder: Path, tmp_path: Path, caplog):
    (imagefolder / "cats" / "..png").write_bytes((imagefolder / "cats" / "img000.png").read_bytes())
    (imagefolder / "cats" / ".DS_Store").write_bytes(b"\0")  # hidden and no image: ignored without a word
    with caplog.at_level(logging.WARNING):
        summary = prepare(imagefolder, tmp_path)
    assert summary["images"] == 24
    assert (
        f"{imagefolder}: 1 hidden file(s) with an image extension are ignored (a name starting with '.' is hidden, "
        "like .DS_Store): cats/..png. Rename them to use them."
    ) in [r.getMessage() for r in caplog.records]


def test_a_clean_folder_passes_the_scan(tmp_path: Path):
    check_before_dvc_add(write_imagefolder(tmp_path / "raw", {"a": 3, "b": 3}))
