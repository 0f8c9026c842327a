"""What each measured subprocess runs: ``python -m benchmarks.worker TASK '<json args>'``.

Each task runs one stage's work in a fresh interpreter and prints one JSON line: its timings
(taken inside, so interpreter start-up is excluded) and its peak memory, both the kernel's
peak resident set (``VmHWM``: all resident pages, mapped file pages included) and the sampled peaks of
anonymous memory and of mapped-file pages.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PROJECT, PeakSampler, peak_rss_mb, summarize


def task_prepare(args: dict[str, Any]) -> dict[str, Any]:
    """The prepare stage's worker on ``raw`` into a temporary folder."""
    from tvs.config import load_params
    from tvs.data import prepare_dataset

    params = load_params(args.get("params", PROJECT / "params.yaml"), overrides=args.get("overrides"))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = prepare_dataset(raw=Path(args["raw"]), out=Path(tmp), params=params, summary_path=Path(tmp, "s.json"))
        seconds = time.perf_counter() - start
        size = Path(tmp, "images.npy").stat().st_size
    return {"seconds": seconds, "images": summary["images"], "cache_bytes": size}


def task_train_epoch(args: dict[str, Any]) -> dict[str, Any]:
    """Whole epochs of the real data path over a share (``fraction``) of the train split."""
    import torch

    from benchmarks.throughput import make_trainer, pipeline_seconds, runtime_for
    from tvs.data import load_prepared

    data = load_prepared(args["prepared"])
    rows, labels = data.split("train")
    keep = np.random.default_rng(0).permutation(len(rows))[: max(1, round(args["fraction"] * len(rows)))]
    rows_t, labels_t = torch.from_numpy(rows[np.sort(keep)]), torch.from_numpy(labels[np.sort(keep)])
    runtime = runtime_for(args.get("device", "cpu"), args["precision"], args["channels_last"], args.get("threads", 0))
    trainer = make_trainer(args["arch"], len(data.classes), runtime, args["batch_size"])
    pipeline_seconds(trainer, data.images, rows_t, labels_t, 2 * args["batch_size"])  # warm-up
    seconds = [pipeline_seconds(trainer, data.images, rows_t, labels_t, len(rows_t)) for _ in range(args["reps"])]
    return {"train_images": len(rows_t), "epoch_seconds": summarize(seconds)}


def task_ceiling(args: dict[str, Any]) -> dict[str, Any]:
    """Compute-ceiling images/s of each of ``precisions`` (the caller sets ``ONEDNN_MAX_CPU_ISA``)."""
    from benchmarks.throughput import ceiling_seconds, make_trainer, runtime_for

    out = {}
    for precision in args["precisions"]:
        runtime = runtime_for("cpu", precision, args["channels_last"], args.get("threads", 0))
        trainer = make_trainer(args["arch"], 2, runtime, args["batch_size"])
        ceiling_seconds(trainer, args["image_size"], 1)  # warm-up: oneDNN builds its kernels
        n = args["steps"] * args["batch_size"]
        out[precision] = summarize([n / ceiling_seconds(trainer, args["image_size"], args["steps"]) for _ in range(2)])
    return {"ceiling_img_s": out}


def task_evaluate(args: dict[str, Any]) -> dict[str, Any]:
    """The evaluate stage's ``predict_arm`` on the test split, for a checkpoint with random weights."""
    from tvs.checkpoint import save_checkpoint
    from tvs.data import load_prepared
    from tvs.evaluation import predict_arm
    from tvs.models import arch_spec, build_model

    data = load_prepared(args["prepared"])
    spec = arch_spec(args["arch"])
    meta = {"arch": args["arch"], "arm": "scratch", "classes": data.classes, "mean": spec.mean, "std": spec.std}
    with tempfile.TemporaryDirectory() as ckpt:
        save_checkpoint(ckpt, build_model(args["arch"], len(data.classes)), meta)
        predict_arm(Path(ckpt), Path(args["prepared"]))  # warm-up
        seconds = []
        for _ in range(args["reps"]):
            start = time.perf_counter()
            probs, _, _ = predict_arm(Path(ckpt), Path(args["prepared"]))
            seconds.append(time.perf_counter() - start)
    per_s = summarize([len(probs) / s for s in seconds])
    return {"test_images": len(probs), "seconds": summarize(seconds), "img_s": per_s}


def task_iterate_cache(args: dict[str, Any]) -> dict[str, Any]:
    """One epoch of ``iterate_batches`` + ``to_model_input`` over a uint8 cache, memory-mapped or loaded."""
    import torch

    from tvs.runtime import Runtime
    from tvs.training import iterate_batches, to_model_input

    images = np.load(args["path"], mmap_mode=None if args["in_memory"] else "r")
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)
    n = len(images)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(n, dtype=torch.long)
    mean = std = torch.full((1, 3, 1, 1), 0.5)
    start = time.perf_counter()
    checksum = 0.0
    for x, _ in iterate_batches(images, order, labels, args["batch_size"], runtime):
        checksum += float(to_model_input(x, mean, std, runtime)[:, :, 0, 0].sum())  # touch every batch
    return {"images": n, "cache_bytes": int(images.nbytes), "seconds": time.perf_counter() - start}


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prepare": task_prepare,
    "train_epoch": task_train_epoch,
    "ceiling": task_ceiling,
    "evaluate": task_evaluate,
    "iterate_cache": task_iterate_cache,
}


def main(argv: list[str]) -> None:
    task, args = argv[0], json.loads(argv[1])
    if args.get("threads"):
        import torch

        torch.set_num_threads(args["threads"])
    with PeakSampler() as sampler:
        result = TASKS[task](args)
    result["memory_mb"] = {
        "peak_rss": peak_rss_mb(),
        "anon_peak": sampler.peaks.get("anon"),
        "file_peak": sampler.peaks.get("file"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
