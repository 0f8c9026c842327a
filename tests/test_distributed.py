"""Several processes per training run (``train.nproc``): the stage runs itself under torchrun's agent.

The end-to-end cases run the training stage as DVC does (one ``python src/stages/train.py``) with
``train.nproc: 2`` on the CPU (gloo), all started together by one fixture so that the file stays
quick on two cores. They run through :data:`HOOKS`, a launcher that adds test-only hooks to the
package before it runs the stage; the stage starts its ranks with its own command line, so every
rank has them too. No hook lives in the package.

The comparison with one process uses timm's ``test_efficientnet_gn`` (GroupNorm): a step of two
ranks on two halves of a batch then computes what one process computes on the whole batch, and
the weights agree to float rounding. With BatchNorm on the CPU they cannot: torch has no
SyncBatchNorm there, so each rank normalises by the statistics of its own half. On the tiny data
here, EfficientNet-Lite0 with two ranks of 2 images ended 7% (relative L2) away from one process
with batches of 4 after three epochs. On CUDA the BatchNorm layers become SyncBatchNorm
(``tvs.compute.runtime.wrap_model``), which this file cannot run without two GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from tvs.compute.runtime import Runtime, check_processes, configure_threads, per_process_batch, sync_batchnorm
from tvs.config import TrainConfig
from tvs.errors import ConfigError, UserError
from tvs.train import launch as launch_module
from tvs.train.launch import LOST_PEER, report
from tvs.train.resume import STATE

from .conftest import ENV, write_imagefolder, write_params
from .stage_runner import make_project, train_cmd

EPOCHS = 3
GROUPNORM = "timm:test_efficientnet_gn"  # 100k parameters, no batch statistics
BATCHNORM = "timm:test_efficientnet"  # the same network with BatchNorm
# Weights that fit each arch: the training stage checks model.weights against model.arch in both arms.
MODELS = {
    arch: {"arch": arch, "weights": f"weights/{arch.split(':')[1]}.safetensors"} for arch in (GROUPNORM, BATCHNORM)
}
TWO = {"epochs": EPOCHS, "augment": "none", "nproc": 2}
KILLED = "train: error: rank 1 of 2 was killed by SIGKILL; rerun to resume after the last completed epoch"
INTERRUPTED = "train: interrupted; nothing half-written (rerun to resume)"

# Runs `python HOOKS src/stages/train.py ARGS`. TVS_TEST_DUMP=DIR: each rank writes its final
# weights to DIR/rank<r>.safetensors and the files it writes to DIR/rank<r>.writes.
# TVS_TEST_KILL=R:E: once every rank has passed epoch E's resume save, rank R kills itself.
HOOKS = """
import os, runpy, signal, sys
import torch
from safetensors.torch import save_file
from tvs import io
from tvs.train import worker
from tvs.train.bookkeeping import Bookkeeping

if "TVS_TEST_DUMP" in os.environ:
    dump = os.path.join(os.environ["TVS_TEST_DUMP"], "rank" + os.environ.get("RANK", "0"))
    atomic_path, fit = io.atomic_path, worker.fit

    def recorded(path):
        with open(dump + ".writes", "a") as log:
            log.write(f"{path}\\n")
        return atomic_path(path)

    def fit_and_dump(*args, **kwargs):
        result = fit(*args, **kwargs)
        state = kwargs["initial"].model.state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, dump + ".safetensors")
        return result

    io.atomic_path, worker.fit = recorded, fit_and_dump

if "TVS_TEST_KILL" in os.environ:
    rank, epoch = map(int, os.environ["TVS_TEST_KILL"].split(":"))
    save = Bookkeeping.save_for_resume

    def save_then_die(self, done, *args):
        save(self, done, *args)
        torch.distributed.barrier()  # rank 0's state for `done` is on disk
        if done == epoch and torch.distributed.get_rank() == rank:
            os.kill(os.getpid(), signal.SIGKILL)

    Bookkeeping.save_for_resume = save_then_die

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def hooked_cmd(torchrun: bool = False) -> list[str]:
    """The stage's command through HOOKS; ``torchrun``: under a one-process torchrun the user started."""
    cmd = train_cmd("scratch")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"] if torchrun else []
    return [cmd[0], *launcher, "hooks.py", *cmd[1:]]


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def weights(dump: Path, rank: int) -> dict[str, torch.Tensor]:
    return load_file(dump / f"rank{rank}.safetensors")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    raw = write_imagefolder(root / "raw", {"cats": 12, "dogs": 12})  # 12 training images
    project = make_project(root / "base", raw, train=TWO, model=MODELS[GROUPNORM])
    for arch, model in MODELS.items():
        state = timm.create_model(arch.split(":")[1], num_classes=2).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, project / model["weights"])
    (project / "hooks.py").write_text(HOOKS)
    return project


def case(base: Path, name: str, **sections) -> Path:
    project = base.parent / name
    shutil.copytree(base, project)
    write_params(project / "params.yaml", **{"train": TWO, "model": MODELS[GROUPNORM], **sections})
    (project / "dump").mkdir()
    return project


def start(project: Path, torchrun: bool = False, **env: str) -> subprocess.Popen:
    temp = project.with_name(f"{project.name}-tmp")  # rank 1's output; left behind by a SIGKILL
    temp.mkdir(exist_ok=True)
    env = {**ENV, "TVS_TEST_DUMP": str(project / "dump"), "TMPDIR": str(temp), **env}
    return subprocess.Popen(
        hooked_cmd(torchrun), cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job (each rank gets a session)
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def after_first_epoch(proc: subprocess.Popen, project: Path) -> None:
    """Wait until epoch 1's resume state is on disk."""
    state = project / "models" / ".resume" / "scratch" / STATE
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pids: list[int], within: float) -> list[int]:
    """Those of ``pids`` still running after up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while (running := [pid for pid in pids if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running


@pytest.fixture(scope="module")
def runs(base: Path) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every end-to-end case, run at the same time: its project folder and finished process."""
    projects = {
        "two": case(base, "two"),
        "one": case(base, "one", train={**TWO, "nproc": 1}),
        "killed": case(base, "killed"),
        "batchnorm": case(base, "batchnorm", train={**TWO, "augment": "flips"}, model=MODELS[BATCHNORM]),
        "ctrl_c": case(base, "ctrl_c", train={**TWO, "epochs": 500}),  # stopped after epoch 1, never finishes
        "sigkill": case(base, "sigkill", train={**TWO, "epochs": 500}),
    }
    killed = projects.pop("killed")
    first = start(killed, TVS_TEST_KILL="1:2")
    procs = {name: start(project) for name, project in projects.items()}
    procs["torchrun"] = start(projects.setdefault("torchrun", case(base, "torchrun", train={**TWO, "nproc": 1})), True)
    after_first_epoch(procs["ctrl_c"], projects["ctrl_c"])
    os.killpg(procs["ctrl_c"].pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
    after_first_epoch(procs["sigkill"], projects["sigkill"])
    ranks = children(procs["sigkill"].pid)
    os.killpg(procs["sigkill"].pid, signal.SIGKILL)  # a timeout or a scheduler: the whole group, no clean-up
    (projects["sigkill"] / "ranks.json").write_text(json.dumps({"ranks": ranks, "alive": alive(ranks, 20)}))
    done = {"killed": (killed.with_name("killed_as_left"), finish(first))}
    shutil.copytree(killed, killed.with_name("killed_as_left"))  # what the kill left, before the rerun uses it
    shutil.rmtree(killed / "dump")
    (killed / "dump").mkdir()
    rerun = start(killed)
    done |= {name: (projects[name], finish(proc)) for name, proc in procs.items()}
    return done | {"rerun": (killed, finish(rerun))}


# --- (a) and (b): two processes complete, and only rank 0 writes --------------------------------


@pytest.mark.e2e
def test_two_processes_on_the_cpu_complete_and_only_rank_0_writes_what_one_process_writes(runs):
    (two, proc), (one, single) = runs["two"], runs["one"]
    assert proc.returncode == 0 and single.returncode == 0, proc.stderr + single.stderr
    outputs = files(two / "models") | files(two / "dvclive")
    assert outputs == files(one / "models") | files(one / "dvclive")  # the same files, no stray temporaries
    assert (two / "dump" / "rank1.writes").exists() is False  # rank 1 wrote nothing at all
    written = (two / "dump" / "rank0.writes").read_text().split()
    assert {"models/scratch/model.safetensors", "models/scratch/meta.json"} <= set(written)
    assert f"models/.resume/scratch/{STATE}" in written
    for tsv in (two / "dvclive" / "scratch" / "plots" / "metrics").rglob("*.tsv"):  # one writer: one row an epoch
        assert len(tsv.read_text().splitlines()) == 1 + EPOCHS, tsv
    meta = json.loads((two / "models" / "scratch" / "meta.json").read_text())
    assert [row["epoch"] for row in meta["history"]] == [1, 2, 3]
    assert meta["params"]["train"]["batch_size"] == 4 and meta["params"]["train"]["nproc"] == 2  # the global batch
    for epoch in range(1, EPOCHS + 1):  # rank 0 logs; rank 1's lines went to a file nobody sees
        assert proc.stderr.count(f"scratch epoch {epoch}/{EPOCHS}:") == 1, proc.stderr
    assert not (two / "models" / ".resume" / "scratch").exists()  # a finished run forgets its state


# --- (c) both ranks end with the same weights ------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["two", "batchnorm"])
def test_both_ranks_end_with_identical_weights_and_buffers(runs, name: str):
    project, proc = runs[name]
    assert proc.returncode == 0, proc.stderr
    rank0, rank1 = weights(project / "dump", 0), weights(project / "dump", 1)
    assert rank0.keys() == rank1.keys()
    assert [key for key in rank0 if not torch.equal(rank0[key], rank1[key])] == []
    if name == "batchnorm":  # BatchNorm's running statistics too: DDP broadcasts rank 0's buffers
        assert any(key.endswith("running_mean") for key in rank0)


@pytest.mark.e2e
def test_a_one_process_torchrun_runs_as_a_process_group_and_matches_a_plain_run(runs):
    """The code path of several processes (gloo here, NCCL on one GPU), checked with one."""
    (under, proc), (one, single) = runs["torchrun"], runs["one"]
    assert proc.returncode == 0 and single.returncode == 0, proc.stderr + single.stderr
    assert "process group: rank 0 of 1, backend gloo" in proc.stderr
    assert "process group" not in single.stderr
    a, b = weights(under / "dump", 0), weights(one / "dump", 0)
    assert [key for key in a if not torch.equal(a[key], b[key])] == []  # DDP over one rank averages nothing


# --- (d) two processes compute what one does on the same global batch ---------------------------


@pytest.mark.e2e
def test_two_processes_match_one_process_with_the_same_global_batch_to_float_rounding(runs):
    (two, proc), (one, single) = runs["two"], runs["one"]
    assert proc.returncode == 0 and single.returncode == 0, proc.stderr + single.stderr
    a, b = weights(two / "dump", 0), weights(one / "dump", 0)
    for key in a:  # measured: 9e-7 apart at most; one process with batches of 2, not 4, ends 3e-2 away
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    history = [json.loads((p / "models/scratch/meta.json").read_text())["history"] for p in (two, one)]
    for row2, row1 in zip(*history, strict=True):  # validation runs on every image in both
        assert row2["val_loss"] == pytest.approx(row1["val_loss"], abs=1e-5)
        assert row2["val_accuracy"] == row1["val_accuracy"]


def test_the_ranks_batches_together_are_one_processs_batches_in_order():
    order = torch.randperm(22, generator=torch.Generator().manual_seed(0))
    for world, batch in ((2, 4), (2, 6), (4, 8)):
        share = per_process_batch(batch, world)
        shards = [
            Runtime(torch.device("cpu"), None, False, rank=r, world_size=world).shard(order) for r in range(world)
        ]
        usable = order[: len(order) - len(order) % world]
        for k, start in enumerate(range(0, len(usable), batch)):
            together = torch.cat([shard[k * share : (k + 1) * share] for shard in shards])
            assert sorted(together.tolist()) == sorted(usable[start : start + batch].tolist())


def test_a_batch_that_does_not_split_over_the_processes_names_train_batch_size():
    with pytest.raises(ConfigError, match=r"^train\.batch_size: 5 does not split evenly over 2 processes"):
        per_process_batch(5, 2)


def test_a_batch_that_does_not_split_stops_the_launch_before_any_process_starts(monkeypatch):
    monkeypatch.setattr(launch_module, "elastic_launch", None)  # reaching it would raise TypeError
    with pytest.raises(ConfigError, match=r"^train\.batch_size: 6 does not split evenly over 4 processes"):
        launch_module.launch(TrainConfig(batch_size=6, nproc=4))


def test_processes_on_cuda_need_a_gpu_each_and_share_the_cpu_cores_otherwise():
    with pytest.raises(ConfigError, match=rf"^train\.nproc: {torch.cuda.device_count() + 2} processes on this machine"):
        check_processes(torch.device("cuda"), torch.cuda.device_count() + 2)
    check_processes(torch.device("cpu"), 64)  # the CPU is shared, below
    threads = torch.get_num_threads()
    try:
        assert configure_threads(0, processes=2) == max(1, len(os.sched_getaffinity(0)) // 2)
    finally:
        torch.set_num_threads(threads)


def test_sync_batchnorm_keeps_the_weights_keys_and_timms_activations():
    model = timm.create_model("test_efficientnet", num_classes=2)
    keys = model.state_dict().keys()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    acts = [type(getattr(m, "act", None)) for m in norms]
    assert sync_batchnorm(model) is model and model.state_dict().keys() == keys
    synced = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(synced) == len(norms) and all(isinstance(m, torch.nn.SyncBatchNorm) for m in synced)
    assert [type(getattr(m, "act", None)) for m in synced] == acts  # torch's own converter drops them


# --- (e) a rank that dies: one line, and the rerun resumes ----------------------------------------


def assert_stopped_in_one_line(project: Path, proc: subprocess.CompletedProcess, code: int, last: str) -> None:
    """Log lines, then ``last``, no traceback; what a kill leaves: whole files and the resume state."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == last and "Traceback" not in proc.stderr, proc.stderr
    assert all(line.startswith("[train] ") for line in lines[:-1]), proc.stderr
    assert (project / "models" / ".resume" / "scratch" / STATE).is_file()
    assert not list(project.rglob(".*.tmp"))


@pytest.mark.e2e
def test_a_killed_rank_fails_the_stage_in_one_line_and_the_rerun_resumes_to_the_same_weights(runs):
    assert_stopped_in_one_line(*runs["killed"], 1, KILLED)

    rerun_project, rerun = runs["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    assert "[train] resuming after epoch 2 from" in rerun.stderr
    assert f"scratch epoch 1/{EPOCHS}" not in rerun.stderr and f"scratch epoch 3/{EPOCHS}" in rerun.stderr
    two, _ = runs["two"]  # the resumed run ends where an uninterrupted one does, bit for bit (CPU)
    resumed, uninterrupted = weights(rerun_project / "dump", 0), weights(two / "dump", 0)
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)


@pytest.mark.e2e
def test_ctrl_c_stops_every_rank_with_one_line_and_exit_130(runs):
    assert_stopped_in_one_line(*runs["ctrl_c"], 130, INTERRUPTED)


@pytest.mark.e2e
def test_a_stage_killed_with_its_process_group_leaves_no_rank_running(runs):
    project, proc = runs["sigkill"]
    assert proc.returncode == -signal.SIGKILL
    ranks = json.loads((project / "ranks.json").read_text())
    assert len(ranks["ranks"]) == 2 and ranks["alive"] == []  # torchrun puts each rank in a session of its own


def failure(logs: Path, rank: int, exitcode: int, said: str = "") -> ProcessFailure:
    """A rank's failure as torchrun's agent reports it; ``said`` went to the rank's stderr file in ``logs``."""
    folder = logs / "run_x" / "attempt_0" / str(rank)
    folder.mkdir(parents=True)
    (folder / "stderr.log").write_text(said)
    return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file="<N/A>")


def test_a_killed_rank_is_named_before_the_ranks_the_agent_stopped_or_that_lost_it(tmp_path: Path):
    failures = {0: failure(tmp_path, 0, -signal.SIGTERM), 1: failure(tmp_path, 1, -signal.SIGKILL)}
    with pytest.raises(UserError, match=r"^rank 1 of 2 was killed by SIGKILL; rerun to resume"):
        report(failures, 2, tmp_path)


def test_a_failed_rank_other_than_0_has_its_own_words_shown(tmp_path: Path, capsys):
    said = "train: error: some file: unreadable\n"
    failures = {0: failure(tmp_path, 0, LOST_PEER), 1: failure(tmp_path, 1, 1, said)}
    with pytest.raises(SystemExit) as stop:
        report(failures, 2, tmp_path)
    assert stop.value.code == 1 and capsys.readouterr().err == said


def test_a_failed_rank_0_has_spoken_on_the_console_already(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stop:
        report({0: failure(tmp_path, 0, 1)}, 2, tmp_path)
    assert stop.value.code == 1 and capsys.readouterr().err == ""
