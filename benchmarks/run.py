"""The CPU benchmark suite: `python -m benchmarks.run [--quick] [--out FILE] [--only SECTIONS]`.

Full mode measures the real default dataset (``data/raw``, ``data/prepared``) and this repo;
``--quick`` generates a tiny ImageFolder and a one-stage DVC project and runs every section in
seconds (for tests). Writes JSON after each section, so a stopped run keeps what it measured,
and prints the goals; ``python -m benchmarks.report`` turns the JSON into docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import PROJECT, display_path, machine_info, precision_name, summarize, write_result
from benchmarks.naive import equal_epochs
from benchmarks.report import section_goals
from benchmarks.throughput import CPU_COMBOS, grid_under_isa, make_trainer, pipeline_vs_ceiling, precision_grid
from tvs.compute.runtime import resolve_precision
from tvs.config import Params, load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared

log = logging.getLogger("benchmarks")
# oneDNN instruction-set caps that stand in for CPUs without bf16 instructions (ONEDNN_MAX_CPU_ISA)
EMULATED_ISAS = ("AVX512_CORE_VNNI", "AVX2")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one run (``full`` on the real data, ``quick`` on tiny data)."""

    mode: str = "full"
    arch: str = "tf_efficientnet_lite0"
    image_size: int = 128
    batch_size: int = 64
    reps: int = 3  # repeats of every in-process timing
    steps: int = 8  # batches per pipeline/ceiling pass
    grid_steps: int = 4  # batches per pass in the precision/layout grid
    grid_archs: tuple[str, ...] = ("tf_efficientnet_lite0", "resnet18")
    isa_batch: int = 16  # emulated bf16 is slow: a small batch keeps the isa section short
    epochs: int = 2  # equal-epochs comparison against the naive loop
    init: str = "pretrained"  # arm whose initialisation the equal-epochs runs use
    naive_batch: int = 32
    dvc_reps: int = 3
    threads: int = 0  # torch threads (0: every core); quick uses 1, robust on a busy shared machine


FULL = Settings()
QUICK = Settings(
    mode="quick", image_size=32, batch_size=4, reps=2, steps=2, grid_steps=1, grid_archs=("tf_efficientnet_lite0",),
    isa_batch=4, epochs=1, init="scratch", naive_batch=4, dvc_reps=1, threads=1,
)  # fmt: skip


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


def make_inputs(settings: Settings, tmp: Path) -> tuple[Path, Path, Params]:
    """``raw``, ``prepared`` and params. Quick: tiny data run through the real ``prepare``; full: the project's."""
    overrides: dict[str, Any] = {}
    raw, prepared = PROJECT / "data" / "raw", PROJECT / "data" / "prepared"
    if settings.mode == "quick":
        overrides = {"data.image_size": settings.image_size, "data.val_fraction": 0.25, "data.test_fraction": 0.25}
        raw, prepared = write_tiny_imagefolder(tmp / "raw"), tmp / "prepared"
        params = load_params(PROJECT / "params.yaml", overrides=overrides)
        prepare_dataset(raw=raw, out=prepared, params=params, summary_path=tmp / "prepare.json")
    overrides |= {"train.epochs": settings.epochs, "train.batch_size": settings.batch_size, "train.device": "cpu"}
    overrides |= {"train.num_threads": settings.threads, "model.arch": settings.arch}
    params = load_params(PROJECT / "params.yaml", overrides=overrides)
    size = load_prepared(prepared).images.shape[-1]
    if size != params.data.image_size or size != settings.image_size:
        raise ValueError(f"{prepared}: cache is {size} px, params/settings say {params.data.image_size}; rerun prepare")
    return raw, prepared, params


def section_precision(s: Settings, raw: Path, prepared: Path, params: Params) -> dict[str, Any]:
    grid = {"image_size": s.image_size, "batch_size": s.batch_size, "n_batches": s.grid_steps, "threads": s.threads}
    rows = [row for arch in s.grid_archs for row in precision_grid(CPU_COMBOS, arch, reps=s.reps, **grid)]
    mine = [r for r in rows if r["arch"] == s.arch]
    best = max((r for r in mine if r["channels_last"] == params.train.channels_last), key=_median_ceiling)
    auto = precision_name(resolve_precision("auto", torch.device("cpu")))
    auto_row = next(r for r in mine if r["amp_dtype"] == auto and r["channels_last"])
    return {
        "rows": rows,
        "auto_resolves_to": auto,
        "fastest_for_default_arch": {k: best[k] for k in ("precision", "channels_last")},
        "auto_vs_fastest": _median_ceiling(auto_row) / _median_ceiling(best),
    }


def _median_ceiling(row: dict[str, Any]) -> float:
    return row["ceiling_img_s"]["median"]


def section_isa(s: Settings, raw: Path, prepared: Path, params: Params) -> dict[str, Any]:
    """fp32 vs bf16 ceilings (channels-last) with oneDNN held to older instruction sets."""
    combos = [{"precision": p, "channels_last": True} for p in ("fp32", "bf16")]
    grid = {"combos": combos, "arch": s.arch, "image_size": s.image_size, "batch_size": s.isa_batch, "n_batches": 1}
    rows = [{"isa": isa, **r} for isa in EMULATED_ISAS for r in grid_under_isa(isa, **grid, reps=2, threads=s.threads)]
    return {"rows": [r | {"bf16_vs_fp32": r["speedup"] if r["precision"] == "bf16" else None} for r in rows]}


def section_pipeline(s: Settings, raw: Path, prepared: Path, params: Params) -> dict[str, Any]:
    data = load_prepared(prepared)
    trainer = make_trainer(s.arch, params.train)
    result = pipeline_vs_ceiling(trainer, data.images, *data.split("train"), s.steps, s.reps)
    rt = trainer.runtime
    return {"arch": s.arch, "precision": precision_name(rt.amp_dtype), "channels_last": rt.channels_last, **result}


def section_naive(s: Settings, raw: Path, prepared: Path, params: Params) -> dict[str, Any]:
    return equal_epochs(params, raw, prepared, s.init, s.naive_batch)


def section_overhead(s: Settings, raw: Path, prepared: Path, params: Params) -> dict[str, Any]:
    """``dvc status`` and ``dvc repro`` with nothing changed: this repo (full), a tiny project (quick)."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = PROJECT if s.mode == "full" else tiny_dvc_repo(Path(tmp))
        return {"dvc": dvc_noop(repo, s.dvc_reps) | {"tiny_temporary_repo": s.mode != "full"}}


def dvc(repo: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and result of the ``dvc`` beside this interpreter (the project's venv) in ``repo``."""
    exe = Path(sys.executable).parent / "dvc"
    exe = str(exe) if exe.exists() else shutil.which("dvc") or "dvc"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    proc = subprocess.run([exe, *args], cwd=repo, capture_output=True, text=True, env=env | {"DVC_NO_ANALYTICS": "1"})
    return time.perf_counter() - start, proc


def dvc_noop(repo: Path, reps: int) -> dict[str, Any]:
    """Seconds of ``dvc status`` and, only if it reports nothing changed, of ``dvc repro`` (which then runs nothing)."""
    status = dvc(repo, "status", "--json")[1]
    changes = json.loads(status.stdout or "{}") if status.returncode == 0 else {"error": status.stderr[-500:]}
    result: dict[str, Any] = {"repo": display_path(repo), "up_to_date": changes == {}}
    result["dvc_status_s"] = summarize([dvc(repo, "status")[0] for _ in range(reps)])
    if changes != {}:
        return result | {
            "skipped": f"dvc status reports changes, so `dvc repro` would run stages: {sorted(changes)[:5]}"
        }
    runs = [dvc(repo, "repro") for _ in range(reps)]
    result["dvc_repro_noop_s"] = summarize([seconds for seconds, _ in runs])
    result["repro_ran_stages"] = any(p.returncode != 0 or "Running stage" in p.stdout for _, p in runs)
    return result


def tiny_dvc_repo(folder: Path) -> Path:
    """A one-stage DVC project (no git), already reproduced: the quick mode's no-op target."""
    (folder / "in.txt").write_text("x\n")
    stage = "stages:\n  copy:\n    cmd: python -c \"import shutil; shutil.copy('in.txt', 'out.txt')\"\n"
    (folder / "dvc.yaml").write_text(stage + "    deps: [in.txt]\n    outs: [out.txt]\n")
    for args in (("init", "--no-scm", "-q"), ("repro", "-q")):
        proc = dvc(folder, *args)[1]
        if proc.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} in {folder} failed: {proc.stderr[-1000:]}")
    return folder


RUNNERS = {
    "precision": section_precision,
    "isa": section_isa,
    "pipeline": section_pipeline,
    "naive": section_naive,
    "overhead": section_overhead,
}


SECTIONS = tuple(RUNNERS)


def run(settings: Settings, sections: list[str], out: Path) -> dict[str, Any]:
    """Run ``sections`` in order; write the JSON after each one; return the whole result."""
    result: dict[str, Any] = {"kind": "cpu", "machine": machine_info(), "settings": dataclasses.asdict(settings)}
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared, params = make_inputs(settings, Path(tmp))
        data = load_prepared(prepared)
        train_images = len(data.split("train")[0])
        result["dataset"] = {"raw": display_path(raw), "images": len(data.images), "train_images": train_images}
        result["dataset"]["image_size"] = settings.image_size
        result["section_seconds"] = {}
        for name in sections:
            log.info("section %s ...", name)
            start = time.perf_counter()
            result[name] = RUNNERS[name](settings, raw, prepared, params)
            result["section_seconds"][name] = time.perf_counter() - start
            log.info("section %s: %.1fs", name, result["section_seconds"][name])
            write_result(out, result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny generated data, every section in seconds")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/cpu.json or quick.json)")
    parser.add_argument("--only", help=f"comma-separated sections out of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr)
    sections = args.only.split(",") if args.only else list(SECTIONS)
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"--only: unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    out = args.out or PROJECT / "benchmarks" / "results" / f"{'quick' if args.quick else 'cpu'}.json"
    result = run(QUICK if args.quick else FULL, sections, out)
    print("\n".join(section_goals(result)) + f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
