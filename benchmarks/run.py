"""The CPU benchmark suite: `python -m benchmarks.run [--quick] [--out FILE] [--only SECTIONS]`.

Full mode measures the real default dataset (``data/raw``, ``data/prepared``) and the real repo;
``--quick`` generates a tiny ImageFolder and a one-stage DVC project and runs every section in
seconds (for tests). Prints the goals table and writes JSON (after each section, so a stopped
run keeps what it measured). ``python -m benchmarks.report`` turns the JSON into docs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import FULL, PROJECT, QUICK, Settings, display_path, machine_info, write_result
from benchmarks.summary import print_summary
from benchmarks.throughput import precision_name
from tvs.config import Params, load_params
from tvs.data import load_prepared, prepare_dataset
from tvs.runtime import make_runtime, resolve_precision

log = logging.getLogger("benchmarks")
SECTIONS = ("precision", "isa", "pipeline", "naive", "overhead", "scaling", "memory")
# oneDNN instruction-set caps that stand in for CPUs without bf16 instructions (ONEDNN_MAX_CPU_ISA)
EMULATED_ISAS = ("AVX512_CORE_VNNI", "AVX2")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The data, params and repo one run measures."""

    raw: Path
    prepared: Path
    params: Params
    data_overrides: dict[str, Any]
    repo: Path | None  # None: a tiny temporary DVC project


def write_tiny_imagefolder(root: Path, per_class: int = 24, size: int = 40) -> Path:
    """Two learnable classes of grayscale PNGs (bright left half vs bright right half)."""
    from PIL import Image

    for label, half in (("left", slice(0, size // 2)), ("right", slice(size // 2, size))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.random.default_rng([i, half.start]).integers(0, 60, (size, size), dtype=np.uint8)
            arr[:, half] += 150
            Image.fromarray(arr, mode="L").save(root / label / f"{i:03d}.png")
    return root


def make_inputs(settings: Settings, tmp: Path, repo: Path | None) -> Inputs:
    """Quick: tiny generated data prepared by the real ``prepare``. Full: the project's own data."""
    overrides: dict[str, Any] = {}
    if settings.mode == "quick":
        overrides = {"data.image_size": settings.image_size, "data.val_fraction": 0.25, "data.test_fraction": 0.25}
        raw, prepared = write_tiny_imagefolder(tmp / "raw"), tmp / "prepared"
        params = load_params(PROJECT / "params.yaml", overrides=overrides)
        prepare_dataset(raw=raw, out=prepared, params=params, summary_path=tmp / "prepare.json")
    else:
        raw, prepared, repo = PROJECT / "data" / "raw", PROJECT / "data" / "prepared", repo or PROJECT
    train = {"train.epochs": settings.epochs, "train.batch_size": settings.batch_size, "train.device": "cpu"}
    train["train.num_threads"] = settings.threads
    params = load_params(PROJECT / "params.yaml", overrides={**overrides, **train, "model.arch": settings.arch})
    size = load_prepared(prepared).images.shape[-1]
    if size != params.data.image_size or size != settings.image_size:
        raise ValueError(f"{prepared}: cache is {size} px, params/settings say {params.data.image_size}; rerun prepare")
    return Inputs(raw, prepared, params, overrides, repo if settings.mode == "full" else None)


def section_precision(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    from benchmarks.throughput import CPU_COMBOS, fastest, precision_grid

    rows = []
    for arch in settings.grid_archs:
        size, batch, steps = settings.image_size, settings.batch_size, settings.grid_steps
        rows += precision_grid(CPU_COMBOS, arch, "cpu", size, batch, steps, settings.reps, settings.threads)
    auto = resolve_precision("auto", torch.device("cpu"))
    best = fastest([r for r in rows if r["channels_last"] == inputs.params.train.channels_last], settings.arch)
    auto_name = precision_name(auto)
    auto_row = next(
        r for r in rows if r["arch"] == settings.arch and r["amp_dtype"] == auto_name and r["channels_last"]
    )
    return {
        "rows": rows,
        "auto_resolves_to": auto_name,
        "fastest_for_default_arch": {k: best[k] for k in ("precision", "channels_last")},
        "auto_vs_fastest": auto_row["ceiling_img_s"]["median"] / best["ceiling_img_s"]["median"],
    }


def section_isa(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    """fp32 vs bf16 ceilings with oneDNN held to older instruction sets: CPUs we do not have."""
    from benchmarks.common import run_worker

    rows = []
    args = {"arch": settings.arch, "image_size": settings.image_size, "batch_size": settings.isa_batch}
    args |= {"precisions": ["fp32", "bf16"], "channels_last": True, "steps": 1, "threads": settings.threads}
    for isa in EMULATED_ISAS:
        speeds = run_worker("ceiling", args, env={"ONEDNN_MAX_CPU_ISA": isa})["ceiling_img_s"]
        ratio = speeds["bf16"]["median"] / speeds["fp32"]["median"]
        for precision, summary in speeds.items():
            row = {"isa": isa, "arch": args["arch"], "image_size": args["image_size"], "batch_size": args["batch_size"]}
            rows.append(row | {"precision": precision, "ceiling_img_s": summary})
        rows[-1]["bf16_vs_fp32"] = ratio
    return {"rows": rows}


def section_pipeline(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    from benchmarks.throughput import make_trainer, pipeline_vs_ceiling

    data = load_prepared(inputs.prepared)
    runtime = make_runtime(inputs.params.train)
    trainer = make_trainer(settings.arch, len(data.classes), runtime, settings.batch_size)
    rows, labels = data.split("train")
    result = pipeline_vs_ceiling(trainer, data.images, rows, labels, settings.steps, settings.reps)
    precision = precision_name(runtime.amp_dtype)
    return {"arch": settings.arch, "precision": precision, "channels_last": runtime.channels_last, **result}


def section_naive(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    from benchmarks.naive import equal_epochs

    return equal_epochs(
        inputs.params, inputs.raw, inputs.prepared, settings.init, settings.naive_batch, settings.naive_workers
    )


def section_overhead(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    from benchmarks.overhead import overhead

    return overhead(settings, inputs.raw, inputs.prepared, inputs.repo, inputs.data_overrides)


def section_scaling(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    from benchmarks.scaling import epoch_scaling

    runtime = make_runtime(inputs.params.train)
    precision = precision_name(runtime.amp_dtype)
    return epoch_scaling(inputs.prepared, settings, precision, runtime.channels_last)


def section_memory(settings: Settings, inputs: Inputs) -> dict[str, Any]:
    from benchmarks.scaling import cache_memory

    images = load_prepared(inputs.prepared).images
    return cache_memory(len(images), tuple(images.shape[1:]), settings.mmap_factors, settings.batch_size)


RUNNERS: dict[str, Callable[[Settings, Inputs], dict[str, Any]]] = {
    "precision": section_precision,
    "isa": section_isa,
    "pipeline": section_pipeline,
    "naive": section_naive,
    "overhead": section_overhead,
    "scaling": section_scaling,
    "memory": section_memory,
}


def run(settings: Settings, sections: list[str], out: Path, repo: Path | None = None) -> dict[str, Any]:
    """Run ``sections`` in order; write the JSON after each one; return the whole result."""
    result: dict[str, Any] = {"kind": "cpu", "machine": machine_info(), "settings": dataclasses.asdict(settings)}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(settings, Path(tmp), repo)
        data = load_prepared(inputs.prepared)
        result["dataset"] = {
            "raw": display_path(inputs.raw),
            "images": len(data.images),
            "train_images": len(data.split("train")[0]),
            "image_size": settings.image_size,
        }
        result["section_seconds"] = {}
        for name in sections:
            log.info("section %s ...", name)
            start = time.perf_counter()
            result[name] = RUNNERS[name](settings, inputs)
            result["section_seconds"][name] = time.perf_counter() - start
            log.info("section %s: %.1fs", name, result["section_seconds"][name])
            write_result(out, result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny generated data, every section in seconds")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/cpu.json or quick.json)")
    parser.add_argument("--only", help=f"comma-separated sections out of {','.join(SECTIONS)}")
    parser.add_argument("--repo", type=Path, help="repo for the dvc no-op timing (full mode; default: this one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr)
    settings = QUICK if args.quick else FULL
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    out = args.out or PROJECT / "benchmarks" / "results" / f"{'quick' if args.quick else 'cpu'}.json"
    result = run(settings, sections, out, args.repo)
    print(print_summary(result))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
