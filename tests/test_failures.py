"""Stages that fail say so in one line and leave nothing half-written; identical runs write identical
bytes; resume state stays inside the output folders; Ctrl-C leaves what a kill leaves.

The end-to-end cases run the training stage as DVC does (a subprocess in a project folder) and are
started together by one fixture, so the file stays quick on two cores.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save

from tvs.config import load_params
from tvs.errors import UnsafePathError, WeightsError
from tvs.io import atomic_path, write_bytes
from tvs.models.checkpoint import WEIGHTS, save_state
from tvs.models.sources import load_file, why_refused
from tvs.train import resume
from tvs.train.resume import STATE, ResumeSpec, default_resume_dir, load_state
from tvs.train.resume_record import RECORD, params_digest

from .conftest import ENV, PROJECT, write_imagefolder, write_params
from .stage_runner import make_project, one_line_error, run_stage, stage_cmd, train_cmd

EPOCHS = 4  # enough for Ctrl-C to land after epoch 1 and before the end
INTERRUPTED = "train: interrupted; nothing half-written (rerun to resume)"

# A full disk, simulated without root or a tiny file system: the kernel reports ENOSPC when the data
# is flushed (as ext4 with delayed allocation, XFS or NFS do), i.e. at the fsync of every atomic write.
FULL_DISK_LAUNCHER = """
import errno, os, runpy, sys

def fsync(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

os.fsync = fsync
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder``, hidden ones included, by relative path."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(project: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.name.XXXX.tmp``) anywhere in the project."""
    return sorted(project.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with tiny prepared data, trained for ``EPOCHS`` epochs; each case works on a copy."""
    root = tmp_path_factory.mktemp("failures")
    raw = write_imagefolder(root / "raw", {"cats": 12, "dogs": 12})
    return make_project(root / "base", raw, train={"epochs": EPOCHS})


def copy_project(base: Path, name: str) -> Path:
    dest = base.parent / name
    shutil.copytree(base, dest)
    return dest


def arm_cmd(arm: str, out: str | None = None, live: str | None = None) -> list[str]:
    cmd = train_cmd(arm)
    if out is not None:
        cmd[cmd.index("--out") + 1] = out
    if live is not None:
        cmd[cmd.index("--live") + 1] = live
    return cmd


def case_projects(base: Path) -> dict[str, tuple[Path, list[str], dict[str, str]]]:
    """Each end-to-end case: its project folder, command line and extra environment."""
    cases = {}

    project = copy_project(base, "seed")
    write_params(project / "params.yaml", seed=2**32, train={"epochs": EPOCHS})
    cases["seed"] = (project, train_cmd("scratch"), {})

    prepare = ("--params", "params.yaml", "--raw", "data/raw", "--out", "data/prepared", "--summary", "metrics/p.json")
    cases["seed_prepare"] = (project, stage_cmd("prepare", *prepare), {})  # refused before it reads data/raw

    # `cuda` on a machine without one: tests/test_bad_input.py runs that stage
    project = copy_project(base, "cudafoo")
    write_params(project / "params.yaml", train={"epochs": EPOCHS, "device": "cudafoo"})
    cases["cudafoo"] = (project, train_cmd("scratch"), {})

    project = copy_project(base, "corrupt")
    write_params(project / "params.yaml", train={"epochs": EPOCHS}, model={"weights": "weights/cut.safetensors"})
    whole = save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)})
    (project / "weights" / "cut.safetensors").write_bytes(whole[: len(whole) // 2])  # a download cut short
    cases["corrupt"] = (project, train_cmd("pretrained"), {})

    project = copy_project(base, "deep")
    (project / "params.yaml").write_text("seed: " + "[" * 5000 + "]" * 5000 + "\n")
    cases["deep"] = (project, train_cmd("scratch"), {})

    project = copy_project(base, "full")
    (project / "launcher.py").write_text(FULL_DISK_LAUNCHER)
    cases["full"] = (project, [sys.executable, "launcher.py", *train_cmd("scratch")[1:]], {})

    project = copy_project(base, "root")  # the study's dvc.yaml declares the whole of models/ as outputs
    shutil.copy(PROJECT / "study" / "dvc.yaml", project / "dvc.yaml")
    cases["root"] = (project, arm_cmd("scratch", out="models", live="dvclive/x"), {})

    for name in ("first", "second"):
        cases[name] = (copy_project(base, name), train_cmd("scratch"), {})
    return cases


def as_foreground_job() -> None:
    """Ctrl-C reaches a terminal's foreground job; a job a non-interactive shell backgrounds with `&`
    (a CI runner's, `nohup ... &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_after_first_epoch(proc: subprocess.Popen, project: Path) -> None:
    """Ctrl-C once epoch 1's resume state is on disk (so the rerun has something to resume)."""
    state = project / "models" / ".resume" / "scratch" / STATE
    deadline = time.monotonic() + 90
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)


@pytest.fixture(scope="module")
def runs(base: Path) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every end-to-end case, run at the same time: its project folder and finished process."""
    cases = case_projects(base)
    cases["ctrl_c"] = (copy_project(base, "ctrl_c"), train_cmd("scratch"), {})
    procs = {
        name: subprocess.Popen(
            cmd,
            cwd=project,
            env={**ENV, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=as_foreground_job if name == "ctrl_c" else None,
        )
        for name, (project, cmd, env) in cases.items()
    }
    interrupt_after_first_epoch(procs["ctrl_c"], cases["ctrl_c"][0])
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = (cases[name][0], subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


# --- 10: one line, non-zero exit, nothing half-written -------------------------------------------

ONE_LINE = {
    "seed": "train: error: params.yaml: seed: must be in [0, 2**32)",
    "seed_prepare": "prepare: error: params.yaml: seed: must be in [0, 2**32)",
    "cudafoo": "train: error: train.device: 'cudafoo' is not a device; use 'auto', 'cpu' or 'cuda[:N]'",
    "corrupt": "train: error: model.weights: weights/cut.safetensors: not a readable safetensors file "
    "(Error while deserializing header: incomplete metadata, file not fully covered)",
    "deep": "train: error: params.yaml: nested too deeply to be a params file",
    "full": "train: error: models/scratch/model.safetensors: no space left on device; free some space and rerun",
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["seed", "seed_prepare", "cudafoo", "corrupt", "deep"])
def test_bad_seed_device_weights_or_yaml_stop_training_with_one_line_and_write_nothing(runs, case: str):
    project, proc = runs[case]
    assert one_line_error(proc) == ONE_LINE[case]
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr  # at most one log line before it
    assert not (project / "models").exists() and not (project / "metrics").exists()
    if case != "corrupt":  # see the next test
        assert not (project / "dvclive").exists()


@pytest.mark.e2e
def test_corrupt_weights_stop_training_before_the_dvclive_folder_is_made(runs):
    project, proc = runs["corrupt"]
    assert proc.returncode == 1
    assert not (project / "dvclive").exists()


@pytest.mark.e2e
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(runs):
    project, proc = runs["full"]
    assert one_line_error(proc) == ONE_LINE["full"]
    assert "12 train / 6 val images" in proc.stderr  # it failed writing epoch 1's checkpoint, not before training
    assert temporaries(project) == []
    assert not (project / "models" / "scratch" / WEIGHTS).exists()
    assert not (project / "models" / "scratch" / "meta.json").exists()
    assert not (project / "models" / ".resume" / "scratch" / STATE).exists()


def test_a_full_disk_inside_an_atomic_write_names_the_target_and_keeps_the_old_file(tmp_path: Path):
    """A real ENOSPC from the kernel (``/dev/full``), raised while the temporary file is being written."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    target = tmp_path / "out" / "weights.bin"
    write_bytes(target, b"old")
    with pytest.raises(OSError) as err, atomic_path(target) as tmp, open("/dev/full", "wb") as full:
        tmp.write_bytes(b"new, half")
        full.write(b"x" * 100_000)
        full.flush()
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(target))
    assert target.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_resume_state_on_a_full_disk_is_one_error_naming_the_file_not_torchs_writer(tmp_path: Path, monkeypatch):
    spec = ResumeSpec(tmp_path / "models" / ".resume" / "scratch", "abc")
    resume.save_state(spec, {"epoch": 1, "w": torch.zeros(3)})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        resume.save_state(spec, {"epoch": 2, "w": torch.ones(3)})
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(spec.folder / STATE))
    monkeypatch.undo()
    assert load_state(spec)["epoch"] == 1 and temporaries(tmp_path) == []


# --- 11: a refused pickle says why, never "use weights_only=False" -----------------------------


class SystemCall:
    """A pickle that runs a shell command when loaded without weights_only (``GLOBAL posix.system``)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


TORCH_ADVICE = ("weights_only=False", "`weights_only` set to `False`", "add_safe_globals", "Re-running")


def test_a_malicious_pickle_is_refused_with_torchs_reason_and_without_its_advice(tmp_path: Path):
    marker = tmp_path / "pwned"
    torch.save({"w": SystemCall(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as err:
        load_file(tmp_path / "evil.pth")
    assert str(err.value) == (
        f"model.weights: {tmp_path / 'evil.pth'}: refused or unreadable with weights_only=True "
        "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked.)"
    )
    assert not any(advice in str(err.value) for advice in TORCH_ADVICE)
    assert not marker.exists()


def test_a_malicious_pickle_as_resume_state_is_logged_with_the_reason_and_without_the_advice(tmp_path: Path, caplog):
    spec = ResumeSpec(tmp_path / "resume", "abc")
    spec.folder.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "fingerprint": "abc", "epoch": SystemCall(marker)}, spec.folder / STATE)
    with caplog.at_level(logging.WARNING):
        assert load_state(spec) is None
    assert caplog.messages == [
        f"{spec.folder / STATE}: unreadable (Trying to load unsupported GLOBAL posix.system whose module posix "
        "is blocked.); starting from epoch 1"
    ]
    assert not marker.exists()


@pytest.mark.parametrize(
    "message, reason",
    [
        (  # torch 2.4-2.5: the reason on the advice's line
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
            "succeed, but it can result in arbitrary code execution. Do it only if you got the file from a trusted "
            "source.\n Please file an issue with the following so that we can make `weights_only=True` compatible "
            "with your use case: WeightsUnpickler error: Unsupported operand 149\n\nCheck the documentation of "
            "torch.load to learn more about types accepted by default with weights_only https://pytorch.org/docs",
            "Unsupported operand 149",
        ),
        (  # torch 2.6 and later: the allowlisting advice after the reason
            "Weights only load failed. This file can still be loaded, to do so you have two options.\n\t(1) "
            "Re-running `torch.load` with `weights_only` set to `False` will likely succeed.\n\t(2) Alternatively, "
            "to load with `weights_only=True` please check the recommended steps in the following error message.\n"
            "\tWeightsUnpickler error: Unsupported global: GLOBAL getattr was not an allowed global by default. "
            "Please use `torch.serialization.add_safe_globals([getattr])` or the `torch.serialization.safe_globals"
            "([getattr])` context manager to allowlist this global if you trust this class/function.",
            "Unsupported global: GLOBAL getattr was not an allowed global by default.",
        ),
        ("PytorchStreamReader failed reading zip archive: failed finding central directory", None),
    ],
)
def test_why_refused_keeps_torchs_reason_and_drops_its_advice(message: str, reason: str | None):
    assert why_refused(RuntimeError(message)) == (reason or message)


# --- 12: identical inputs give identical bytes ------------------------------------------------

TIMING = {"train_seconds", "epoch_seconds", "elapsed_seconds"}  # wall-clock time: differs between any two runs


def timeless(data):
    """JSON ``data`` without its wall-clock timing fields."""
    if isinstance(data, dict):
        return {k: timeless(v) for k, v in data.items() if k not in TIMING}
    if isinstance(data, list):
        return [timeless(v) for v in data]
    return data


def test_the_same_weights_saved_again_give_the_same_bytes(tmp_path: Path):
    state = {"b.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(2), "a.num": torch.tensor(3)}
    meta = {"arch": "resnet18", "arm": "scratch"}
    for i in range(8):  # safetensors' metadata was written in an order that changes from call to call
        save_state(tmp_path / str(i), state, meta)
    assert len({md5(tmp_path / str(i) / WEIGHTS) for i in range(8)}) == 1


@pytest.mark.e2e
def test_two_identical_training_runs_write_the_same_bytes_but_for_wall_clock_times(runs):
    (first, proc1), (second, proc2) = runs["first"], runs["second"]
    assert proc1.returncode == 0 and proc2.returncode == 0, proc1.stderr + proc2.stderr
    for folder in ("models/scratch", "dvclive/scratch"):
        a, b = files(first / folder), files(second / folder)
        assert a.keys() == b.keys()
        differ = sorted(name for name in a if md5(a[name]) != md5(b[name]))
        # only the files that record wall-clock time differ, and only in those fields
        assert set(differ) <= {"meta.json", "metrics.json", "plots/metrics/epoch_seconds.tsv"}, differ
        for name in differ:
            if name.endswith(".json"):
                assert timeless(json.loads(a[name].read_text())) == timeless(json.loads(b[name].read_text()))
            else:
                steps = [[row.split("\t")[0] for row in p.read_text().splitlines()] for p in (a[name], b[name])]
                assert steps[0] == steps[1]
    assert md5(first / "models/scratch" / WEIGHTS) == md5(second / "models/scratch" / WEIGHTS)


# --- 13: resume state inside the output folders ----------------------------------------------


def test_resume_state_lies_beside_the_output_in_its_output_folder(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_resume_dir("models/scratch") == Path("models/.resume/scratch")
    assert default_resume_dir(tmp_path / "models" / "scratch") == tmp_path / "models" / ".resume" / "scratch"
    for out in ("models", tmp_path / "models"):
        with pytest.raises(UnsafePathError, match=r"here (\S*/)?\.resume/models in the project root"):
            default_resume_dir(out)


@pytest.mark.e2e
def test_out_directly_in_the_project_is_refused_so_resume_state_never_lands_in_the_root(runs):
    project, proc = runs["root"]
    assert one_line_error(proc) == (
        "train: error: --out models: training keeps its resume state beside its output folder, here .resume/models "
        "in the project root, outside the output folders; name a folder inside an output folder, e.g. models/<name>"
    )
    assert not (project / ".resume").exists()
    assert not (project / "models").exists() and not (project / "dvclive").exists()


# --- Ctrl-C: one line, the state of a kill, and the rerun resumes ------------------------------


@pytest.mark.e2e
def test_ctrl_c_prints_one_line_leaves_what_a_kill_leaves_and_the_rerun_resumes(runs):
    project, proc = runs["ctrl_c"]
    assert proc.returncode == 130, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == INTERRUPTED and "Traceback" not in proc.stderr
    assert all(line.startswith("[train] ") for line in lines[:-1]), proc.stderr  # log lines, then the one line
    assert temporaries(project) == []
    assert (project / "models" / ".resume" / "scratch" / STATE).is_file()
    record = (project / "models" / ".resume" / "scratch" / RECORD).read_text().strip()
    assert record == params_digest(load_params(project / "params.yaml"))  # what check_params compares
    checkpoint = project / "models" / "scratch"  # whole files only: the best epoch's so far
    assert load_safetensors(checkpoint / WEIGHTS) and json.loads((checkpoint / "meta.json").read_text())
    rerun = run_stage(project, train_cmd("scratch"))
    assert rerun.returncode == 0, rerun.stderr
    assert "[train] resuming after epoch " in rerun.stderr
    assert not (project / "models" / ".resume" / "scratch").exists()
    first, _ = runs["first"]  # the resumed run ends where an uninterrupted one does, bit for bit (CPU)
    assert md5(project / "models/scratch" / WEIGHTS) == md5(first / "models/scratch" / WEIGHTS)
    meta = [json.loads((p / "models/scratch/meta.json").read_text()) for p in (project, first)]
    assert timeless(meta[0]) == timeless(meta[1])


@pytest.mark.e2e
def test_check_params_removes_a_resume_state_made_with_other_params_and_keeps_the_current_one(tmp_path: Path):
    """After Ctrl-C, `dvc exp run -S lr=...` with params DVC restores from its run-cache runs no training
    code, so the state stayed (tens of MB). `check_params` runs on every edit of params.yaml and removes
    states of other params (no run could resume them: one state per arm, resumed only with its params)."""
    project = tmp_path / "project"
    project.mkdir()
    params = write_params(project / "params.yaml", lr=0.001)
    resume_root = project / "models" / ".resume"
    for arm in ("pretrained", "scratch"):
        spec = ResumeSpec(resume_root / arm, "fingerprint", params_digest(load_params(params)))
        resume.save_state(spec, {"epoch": 1, "model": {"w": torch.zeros(2)}})
    check = stage_cmd("check_params", "--params", "params.yaml", "--resume", "models/.resume")

    kept = run_stage(project, check)  # params.yaml with the params the states were made with
    assert kept.returncode == 0, kept.stderr
    assert sorted(p.name for p in resume_root.iterdir() if p.is_dir()) == ["pretrained", "scratch"]

    write_params(params, lr=0.01)
    removed = run_stage(project, check)

    assert removed.returncode == 0, removed.stderr
    assert not (resume_root / "pretrained").exists() and not (resume_root / "scratch").exists()
    assert removed.stderr.count("resume state of an interrupted run with other params; removed") == 2
    assert (resume_root / ".gitignore").is_file()  # the folder still keeps itself out of git
