"""What every benchmark shares: settings, repeated timings and their summary, machine facts,
peak-memory sampling and measured subprocesses."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]


def display_path(path: str | Path) -> str:
    """``path`` relative to the project when inside it, so results name no machine's folders."""
    try:
        return Path(path).resolve().relative_to(PROJECT).as_posix() or "."
    except ValueError:
        return str(path)


MB = 1 << 20


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one benchmark run (``full`` on the real data, ``quick`` on tiny data)."""

    mode: str = "full"
    arch: str = "tf_efficientnet_lite0"
    image_size: int = 128
    batch_size: int = 64
    reps: int = 3  # repeats of every in-process timing
    steps: int = 8  # batches per throughput pass (pipeline and ceiling)
    grid_steps: int = 4  # batches per pass in the precision/layout grid
    grid_archs: tuple[str, ...] = ("tf_efficientnet_lite0", "resnet18")
    isa_batch: int = 16  # emulated bf16 is slow: a small batch keeps the isa section short
    epochs: int = 2  # equal-epochs comparison against the naive loop
    init: str = "pretrained"  # arm whose initialisation the equal-epochs runs use
    naive_batch: int = 32
    naive_workers: int = 0
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    scaling_reps: int = 2
    mmap_factors: tuple[int, ...] = (1, 4, 16)
    prepare_reps: int = 2
    eval_reps: int = 3
    dvc_reps: int = 3
    threads: int = 0  # torch threads (0: every core); quick uses 1, robust on a busy shared machine


FULL = Settings()
QUICK = Settings(
    mode="quick",
    image_size=32,
    batch_size=4,
    reps=2,
    steps=2,
    grid_steps=1,
    grid_archs=("tf_efficientnet_lite0",),
    isa_batch=4,
    epochs=1,
    init="scratch",
    naive_batch=4,
    fractions=(0.25, 0.5, 1.0),
    scaling_reps=1,
    mmap_factors=(1, 4),
    prepare_reps=1,
    eval_reps=2,
    dvc_reps=1,
    threads=1,
)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, min/max and the raw values of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize: no values")
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive") if len(vals) > 1 else (vals[0],) * 3
    return {
        "median": statistics.median(vals),
        "q1": q1,
        "q3": q3,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float:
    """Ratio of the medians of two summaries measured in the same run."""
    return numerator["median"] / denominator["median"]


def repeat(fn: Callable[[], float], reps: int) -> dict[str, Any]:
    """Summary of ``reps`` calls of ``fn`` (each returns one measurement)."""
    return summarize([fn() for _ in range(reps)])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def cpu_flags() -> list[str]:
    """The SIMD features that decide CPU kernels (AVX2, AVX-512, bf16 and AMX instructions)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx_vnni")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in wanted if f in flags]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare figures across machines."""
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host_cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *map(display_path, sys.argv)]),
        "git_commit": _git_commit(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def memory_now() -> dict[str, float]:
    """Resident memory of this process in MiB: total, anonymous (heap) and file-backed (mapped files)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "hwm"}
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                out[fields[key]] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


class PeakSampler:
    """Samples :func:`memory_now` in a background thread; ``peaks`` holds the maxima in MiB.

    The kernel keeps only the peak of the total (``VmHWM``, which counts the pages of
    memory-mapped files too); sampling separates anonymous memory from mapped file pages.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        for key, value in memory_now().items():
            self.peaks[key] = max(self.peaks.get(key, 0.0), value)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    ``VmHWM``, not ``getrusage().ru_maxrss``: on Linux a child's ``ru_maxrss`` starts from its
    parent's resident size at fork (the exec'd-away copy counts), so a worker started by a
    1 GB benchmark process would report at least 1 GB whatever it did.
    """
    hwm = memory_now().get("hwm")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(task: str, args: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``benchmarks.worker`` ``task`` in a fresh interpreter (``env`` added); return its JSON result.

    A fresh process makes the peak-memory figures those of that task alone.
    """
    cmd = [sys.executable, "-m", "benchmarks.worker", task, json.dumps(args)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, env={**_worker_env(), **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {task} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _worker_env() -> dict[str, str]:
    src = str(PROJECT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}


def to_jsonable(obj: Any) -> Any:
    """Dataclasses and tuples to plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write the run's JSON (atomically; the folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    os.replace(tmp, path)
