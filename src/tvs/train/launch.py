"""Several processes per training run: the stage starts itself again under torchrun's agent.

With ``train.nproc`` > 1, a training stage started as one process (as ``dvc repro`` starts it)
runs its own command line again as ``train.nproc`` processes on this machine, through the agent
behind ``torchrun --standalone`` (:class:`torch.distributed.launcher.api.elastic_launch`), and
waits for them. Rank 0 logs and writes exactly as a one-process run does; the other ranks' output
goes to files in a temporary folder, shown only if one of them fails first. A failure ends in one
line: a rank killed by a signal is named with the signal; a rank that stopped with an error has
printed its message already; ranks that only followed (stopped by the agent, interrupted, or left
without a peer) are not reported. Ctrl-C stops every process and prints the stage's usual line.

Inside a ``torchrun`` someone else started (``LOCAL_RANK`` set, e.g. on several machines: README,
"Several processes per run") nothing is launched again: this process is one rank.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, Std
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from tvs.compute.runtime import check_processes, per_process_batch, resolve_device
from tvs.config import TrainConfig
from tvs.errors import UserError

log = logging.getLogger(__name__)

LOST_PEER = 3  # the exit code of a rank whose collective failed because another rank had gone
PR_SET_PDEATHSIG = 1  # Linux prctl(2): the signal a process gets when its parent dies

# How a rank ends when something else stopped it: the agent's SIGTERM, an interrupt, a lost peer.
FOLLOWERS = {-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT, LOST_PEER}


def inside_torchrun() -> bool:
    """Whether this process is one rank of a torchrun (ours or one the user started)."""
    return "LOCAL_RANK" in os.environ


def launch(train: TrainConfig) -> None:
    """Run this process's own command line as ``train.nproc`` processes here; return when all succeeded.

    Raises:
        ConfigError: ``train.batch_size`` does not split over the processes, or CUDA has too few GPUs.
        UserError: naming the rank that was killed, or that stopped without a word.
        KeyboardInterrupt: Ctrl-C, once every process has stopped.
        SystemExit: a rank's own exit code, its message printed already.
    """
    per_process_batch(train.batch_size, train.nproc)  # checked once here, not once per process
    check_processes(resolve_device(train.device), train.nproc)
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):  # the agent's own chatter
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    with tempfile.TemporaryDirectory(prefix="tvs-ranks-") as logs:
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=train.nproc, run_id=uuid.uuid4().hex,
            rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # as torchrun --standalone: a free local port
            max_restarts=0, monitor_interval=0.1,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects={rank: Std.ALL for rank in range(1, train.nproc)}),
        )  # fmt: skip
        try:
            elastic_launch(config, sys.executable)(*sys.orig_argv[1:])  # the very command line, flags included
        except SignalException as err:  # the agent has stopped every process
            if err.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise SystemExit(128 + err.sigval) from None
        except ChildFailedError as err:
            report(err.failures, train.nproc, Path(logs))


def report(failures: dict[int, ProcessFailure], nproc: int, logs: Path) -> NoReturn:
    """Exit as the failed rank that explains the others did: killed ones first, then the lowest rank.

    ``logs`` holds the ranks' redirected output, as ``<run>/attempt_0/<local rank>/stderr.log``.
    """
    rank, failure = min(
        failures.items(), key=lambda item: (item[1].exitcode in FOLLOWERS, item[1].exitcode > 0, item[0])
    )
    if failure.exitcode < 0:
        raise UserError(
            f"rank {rank} of {nproc} was killed by {failure.signal_name()}; rerun to resume after the last "
            "completed epoch"
        )
    said = "".join(p.read_text() for p in logs.glob(f"*/attempt_0/{failure.local_rank}/stderr.log")) if rank else ""
    if said.strip():  # rank 0 spoke on the console already
        sys.stderr.write(said)
    elif rank > 0 or failure.exitcode in FOLLOWERS:
        raise UserError(f"rank {rank} of {nproc} stopped with exit code {failure.exitcode}")
    raise SystemExit(failure.exitcode)


def run_as_rank(main: Callable[[], None]) -> None:
    """Run ``main``; as one rank of several, only rank 0 logs, and interrupts and lost peers exit quietly.

    The launcher names the rank that failed first; the others' tracebacks would bury its line.
    """
    if not inside_torchrun():
        main()
        return
    die_with_launcher()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, stop_quietly)
    try:
        main()
    except RuntimeError as err:
        if not lost_peer(err):
            raise
        log.warning("rank %d of %d: lost contact with the other processes; stopping", rank, world_size)
        raise SystemExit(LOST_PEER) from None
    if torch.distributed.is_initialized():  # NCCL warns of leaked resources otherwise (seen on the lent GPU)
        torch.distributed.destroy_process_group()


def lost_peer(err: RuntimeError) -> bool:
    """Whether a collective failed because another rank had gone.

    NCCL says so with a ``DistError``; gloo, inside DDP's backward, with a plain ``RuntimeError``
    from its TCP transport ("Connection reset by peer"), hence the look at the message.
    """
    return isinstance(err, torch.distributed.DistError) or "gloo/transport/" in str(err)


def stop_quietly(signum: int, frame: object) -> None:
    """Ctrl-C in a rank: exit 128 + SIGINT, once (the terminal and the launcher both send it)."""
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def die_with_launcher() -> None:
    """Have Linux stop this rank (SIGTERM) when its launcher dies, even by SIGKILL.

    torchrun's agent starts each rank in a session of its own, so a signal to the stage's process
    group never reaches the ranks (Ctrl-C does: the agent forwards it). Without this, a stage
    killed with its process group (a timeout, a job scheduler) would leave its ranks training on
    and writing its outputs under the next run.
    """
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the launcher had died already
        raise SystemExit(128 + signal.SIGTERM)
