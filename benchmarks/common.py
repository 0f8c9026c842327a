"""What the CPU and GPU runs share: timing summaries, a fit scored as the stages score it, machine facts, JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvs.compute.runtime import Runtime, make_runtime, seed_everything
from tvs.config import Params
from tvs.data.prepared import load_prepared
from tvs.evaluate.scoring import predict_arm
from tvs.train.bookkeeping import Bookkeeping, FitResult
from tvs.train.loop import fit
from tvs.train.worker import checkpoint_meta

PROJECT = Path(__file__).resolve().parents[1]


def display_path(path: str | Path) -> str:
    """``path`` relative to the project when inside it, so results name no machine's folders."""
    try:
        return Path(path).resolve().relative_to(PROJECT).as_posix() or "."
    except ValueError:
        return str(path)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the raw values of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize: no values")
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals), "values": vals}


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``: the ``train.precision`` name of an autocast dtype."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]


def fit_and_score(params: Params, arm: str, prepared: Path) -> tuple[FitResult, Runtime, np.ndarray]:
    """The training stage's ``fit`` of ``arm`` on ``prepared``, its checkpoint scored on the test split
    by the evaluate stage's ``predict_arm``: the fit, its runtime and each test image's correctness."""
    data = load_prepared(prepared)
    runtime = make_runtime(params.train)
    with tempfile.TemporaryDirectory() as out:
        books = Bookkeeping(out, lambda result: checkpoint_meta(params, arm, data, result))
        result = fit(params, arm, data, runtime, books, generator=seed_everything(params.seed))
        probs, labels, _ = predict_arm(Path(out), prepared)
    return result, runtime, probs.argmax(1) == labels


def _cpuinfo(key: str) -> str:
    """The first ``key`` line of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare figures across machines."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx_vnni")
    flags = _cpuinfo("flags").split()
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host_cpu": _cpuinfo("model name") or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "cpu_flags": [f for f in wanted if f in flags],  # the SIMD features that decide CPU kernels
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *map(display_path, sys.argv)]),
        "git_commit": _git_commit(),
    }
    if torch.cuda.is_available():
        info |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True)
    except OSError:  # no git on the machine (the lent GPU's copy of the tree)
        return None
    return out.stdout.strip() or None


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write the run's JSON atomically (the folder is created), so a stopped run keeps what it measured."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
