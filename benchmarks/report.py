"""Benchmark JSON to Markdown: `python -m benchmarks.report benchmarks/results/*.json > docs/performance.md`.

Each file is a CPU run (``benchmarks.run``) or a GPU run (``benchmarks.gpu``), told apart by its
``kind``. Sections a run did not measure are left out; with no file at all the page says how to
produce the figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.report_gpu import section_gpu
from benchmarks.summary import fmt, goal_rows, section_machine, spread, table

INTRO = """\
# Performance

How fast the pipeline trains, what it costs around training, and how it scales; every figure
below comes from one run of the benchmark suite in `benchmarks/` on the machine named with it,
and every comparison is a ratio of two measurements taken in the same run. Timings are repeated
and given as median [min-max]; throughput is images per second (img/s).

| what | command | takes |
|---|---|---|
| full CPU suite (default dataset, real repo) | `make bench` (`python -m benchmarks.run`) | ~12 min on 2 cores |
| smoke test on tiny generated data | `make bench-quick` | ~1 min |
| GPU suite (lent GPU machine, `.gpu/` folder) | `python -m benchmarks.gpu --out $OUT/gpu.json` | < 5 min |

This page is generated from the runs' JSON (commit `benchmarks/results/cpu.json` and `gpu.json`):

```bash
.venv/bin/python -m benchmarks.report benchmarks/results/cpu.json benchmarks/results/gpu.json > docs/performance.md
```
"""

METHOD = """\
## How it is measured

- **Pipeline vs ceiling.** Both run the project's own `train_one_epoch` with the same model,
  optimizer, batch size, precision and memory layout. The pipeline is fed as `fit` feeds it:
  rows gathered from the memory-mapped uint8 cache by `iterate_batches`, `random_flips`,
  `to_model_input` (on CUDA the cache is on the GPU when it fits, as in `fit`). The ceiling is
  fed one random batch that is already normalised model input in memory. The two alternate, so
  drift hits both; ratio = median pipeline / median ceiling.
- **Naive loop.** The seed's loop: torchvision `ImageFolder` on `data/raw` with `Resize`,
  `CenterCrop`, random flips, `ToTensor`, `Normalize` every epoch, fp32, contiguous layout,
  batch 32, a default `DataLoader` (no workers). Same initial weights, optimizer, schedule,
  epochs and splits as the fast path (`fit`); both keep the best-validation epoch and are scored
  on the same test images, so accuracy is compared pairwise with an exact McNemar test (p >= 0.05:
  no detectable difference). Epoch time excludes validation on both sides.
- **Precision.** The grid steps the compute ceiling for each precision and layout; the accuracy
  check is `fit` at fp32 against `fit` at `train.precision: auto`, same data path, same seed.
- **Overhead.** `dvc status` and `dvc repro` in the real repo when `dvc status` reports nothing
  changed; the prepare stage's worker on the default dataset into a temporary folder; the
  evaluate stage's `predict_arm` on the test split.
- **Scaling and memory.** Each training-set share runs in a fresh process (so its peak memory is
  its own): whole epochs of the real data path, and a least-squares line of epoch seconds on
  images. Memory is the peak resident set (`VmHWM`: every resident page, pages of memory-mapped
  files included, which the kernel can drop at any time; not `ru_maxrss`, which a child process
  inherits from its parent at fork) and the sampled peak of anonymous memory (the heap:
  what a larger dataset would have to fit in). The cache test iterates one epoch of batches over
  synthetic caches of 1x, 4x and 16x the default cache's size, memory-mapped as training reads
  it, and loaded into memory for contrast.
"""


def section_goals(run: dict[str, Any]) -> list[str]:
    rows = [[r["measure"], fmt(r["value"], 3), r["goal"], _met(r["met"])] for r in goal_rows(run)]
    return ["### Goals", "", *table(["measure", "value", "goal", "met"], rows)]


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("yes" if met else "**no**")


def section_precision(p: dict[str, Any]) -> list[str]:
    rows = [
        [r["arch"], r["image_size"], r["batch_size"], r["amp_dtype"], fmt(r["channels_last"]),
         spread(r["ceiling_img_s"]), fmt(r["speedup"])]
        for r in p["rows"]
    ]  # fmt: skip
    fast = p["fastest_for_default_arch"]
    return [
        "### Precision and layout (compute ceiling)",
        "",
        *table(["arch", "px", "batch", "precision", "channels-last", "img/s", "vs fp32 contiguous"], rows),
        f"`train.precision: auto` resolves to **{p['auto_resolves_to']}** here; the fastest setting for the default "
        f"model is {fast['precision']} (channels-last {fmt(fast['channels_last'])}); auto runs at "
        f"{fmt(p['auto_vs_fastest'])}x of it.",
        "",
    ]


def section_isa(s: dict[str, Any]) -> list[str]:
    rows = [
        [r["isa"], r["arch"], r["image_size"], r["batch_size"], r["precision"], spread(r["ceiling_img_s"]),
         fmt(r.get("bf16_vs_fp32"))]
        for r in s["rows"]
    ]  # fmt: skip
    return [
        "### bf16 without bf16 instructions (oneDNN capped by `ONEDNN_MAX_CPU_ISA`)",
        "",
        *table(["oneDNN ISA cap", "arch", "px", "batch", "precision", "img/s", "bf16 / fp32"], rows),
        "A stand-in for CPUs without AVX512-BF16/AMX (AVX2 laptops and CI runners, older AVX-512 servers); "
        "this is why `auto` picks bf16 on the CPU only where those instructions exist.",
        "",
    ]


def section_pipeline(p: dict[str, Any]) -> list[str]:
    row = [p["arch"], p["precision"], fmt(p["channels_last"]), p["images_per_pass"], spread(p["pipeline_img_s"]),
           spread(p["ceiling_img_s"]), f"**{fmt(p['ratio'])}**", spread(p["paired_ratio"], 2)]  # fmt: skip
    header = ["arch", "precision", "channels-last", "images/pass", "pipeline img/s", "ceiling img/s", "ratio"]
    return ["### Pipeline efficiency", "", *table([*header, "paired ratios"], [row])]


def section_naive(n: dict[str, Any]) -> list[str]:
    rows = [
        [r["name"], spread(r["epoch_seconds"]), fmt(r["img_s"], 1), fmt(r["best_val_accuracy"], 4),
         fmt(r["test_accuracy"], 4)]
        for r in n["runs"].values()
    ]  # fmt: skip
    a, b = n["accuracy_fast_vs_naive"], n["accuracy_auto_vs_fp32"]
    return [
        f"### Against the naive loop ({n['epochs']} epochs each, {n['arm_init']} initialisation)",
        "",
        *table(["loop", "epoch s", "train img/s", "best val acc", "test acc"], rows),
        f"Per-epoch speed-up of the fast path over the naive loop: **{fmt(n['speedup_vs_naive'])}x** "
        f"({fmt(n['speedup_fp32_vs_naive'])}x with the fast path in fp32). Test accuracy, fast minus naive: "
        f"{fmt(a['accuracy_delta'] * 100, 1)} points (McNemar p = {fmt(a['mcnemar_p'], 3)}); "
        f"auto precision minus fp32: {fmt(b['accuracy_delta'] * 100, 1)} points (p = {fmt(b['mcnemar_p'], 3)}).",
        "",
    ]


def section_overhead(o: dict[str, Any]) -> list[str]:
    d, p, e = o["dvc"], o["prepare"], o["evaluate"]
    where = "a tiny temporary project" if d.get("tiny_temporary_repo") else "the project repository"
    repro = spread(d["dvc_repro_noop_s"], 2) if "dvc_repro_noop_s" in d else f"not run: {d.get('skipped')}"
    rows = [
        ["`dvc status` (nothing changed)", spread(d["dvc_status_s"], 2), "-"],
        ["`dvc repro` (nothing changed)", repro, "-"],
        [f"prepare ({p['images']} images)", spread(p["seconds"]), fmt(p["memory_mb"]["peak_rss"], 0)],
        [f"evaluate: predict_arm ({e['test_images']} test images)", spread(e["seconds"], 2),
         fmt(e["memory_mb"]["peak_rss"], 0)],
    ]  # fmt: skip
    notes = f"DVC timed in {where}. Prepare: {fmt(p['img_s'], 0)} img/s; evaluation: {spread(e['img_s'], 0)} img/s."
    return ["### Pipeline overhead", "", *table(["step", "seconds", "peak RSS MiB"], rows), notes, ""]


def section_scaling(s: dict[str, Any]) -> list[str]:
    rows = [
        [fmt(p["fraction"]), p["train_images"], spread(p["epoch_seconds"], 2),
         fmt(p["train_images"] / p["epoch_seconds"]["median"], 1), fmt(p["memory_mb"]["peak_rss"], 0),
         fmt(p["memory_mb"]["anon_peak"], 0)]
        for p in s["points"]
    ]  # fmt: skip
    f = s["fit"]
    return [
        "### Scaling: epoch time vs training-set size",
        "",
        *table(["share", "images", "epoch s", "img/s", "peak RSS MiB", "peak heap MiB"], rows),
        f"Least squares: seconds = {fmt(f['intercept_s'])} + {fmt(f['slope_s_per_image'] * 1000, 2)} ms x images, "
        f"R^2 = **{fmt(f['r2'], 4)}**.",
        "",
    ]


def section_memory(m: dict[str, Any]) -> list[str]:
    rows = [
        [f"{r['factor']}x", fmt(r["cache_mb"], 0), r["mode"], fmt(r["seconds"], 1), fmt(r["peak_rss_mb"], 0),
         fmt(r["anon_peak_mb"], 0), fmt(r["file_peak_mb"], 0)]
        for r in m["rows"]
    ]  # fmt: skip
    lines = ["### Memory-mapped cache: peak memory vs cache size", ""]
    lines += table(["cache", "MiB", "mode", "epoch s", "peak RSS MiB", "heap MiB", "mapped-file MiB"], rows)
    for mode, g in m["growth"].items():
        lines.append(
            f"- {mode}: cache +{fmt(g['cache_growth_mb'], 0)} MiB, heap peak {g['anon_peak_growth_mb']:+.0f} MiB, "
            f"peak RSS {g['peak_rss_growth_mb']:+.0f} MiB"
        )
    return [*lines, ""]


CPU_SECTIONS = {
    "precision": section_precision,
    "isa": section_isa,
    "pipeline": section_pipeline,
    "naive": section_naive,
    "overhead": section_overhead,
    "scaling": section_scaling,
    "memory": section_memory,
}


def section_cpu(run: dict[str, Any]) -> list[str]:
    lines = [f"## CPU ({run['settings']['mode']} run)", *section_machine(run), *section_goals(run)]
    for key, render in CPU_SECTIONS.items():
        if key in run:
            lines += render(run[key])
    return lines


def render(runs: list[dict[str, Any]]) -> str:
    """The whole page for ``runs`` (CPU first, then GPU)."""
    lines = [INTRO]
    cpu = [r for r in runs if r.get("kind") == "cpu"]
    gpu = [r for r in runs if r.get("kind") == "gpu"]
    for run in cpu:
        lines += section_cpu(run)
    if not cpu:
        lines += ["## CPU", "", "No CPU run recorded yet: run `make bench`, then regenerate this page.", ""]
    for run in gpu:
        lines += section_gpu(run)
    if not gpu:
        lines += ["## GPU", "", "No GPU run recorded (none was lent, or its JSON was not passed to the report).", ""]
    return "\n".join([*lines, METHOD]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    for path in paths:
        if not path.exists():
            print(f"benchmarks.report: {path}: no such file, left out", file=sys.stderr)
    runs = [json.loads(p.read_text()) for p in paths if p.exists()]
    sys.stdout.write(render(runs))


if __name__ == "__main__":
    main()
