"""Benchmark JSON to Markdown: `python -m benchmarks.report benchmarks/results/*.json > docs/performance.md`.

Each file is a CPU run (``benchmarks.run``) or a GPU run (``benchmarks.gpu``), told apart by its
``kind``. Only the measurements the suite still makes are rendered (a section a run lacks is left
out); with no file at all the page says how to produce the figures.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

INTRO = """\
# Performance

How fast the pipeline trains and what a no-op run costs; every figure below comes from one run
of the benchmark suite in `benchmarks/` on the machine named with it, and every comparison is a
ratio of two measurements taken in the same run. Timings are repeated and given as median
[min-max]; throughput is images per second (img/s).

| what | command | takes |
|---|---|---|
| full CPU suite (default dataset, real repo) | `make bench` (`python -m benchmarks.run`) | ~9 min on 2 cores |
| the suite's checks and a smoke run on tiny generated data | `make bench-quick` | ~3 min |
| GPU suite (lent GPU machine, `.gpu/`) | `PYTHONPATH=src python -m benchmarks.gpu --out $OUT/gpu.json` | < 5 min |
| stage commands timed without dvc (lent GPU) | `python -m benchmarks.stages --out $OUT/stages.json` | ~2 min |

This page is generated from the runs' JSON (commit them under `benchmarks/results/`):

```bash
.venv/bin/python -m benchmarks.report benchmarks/results/cpu.json benchmarks/results/gpu.json \\
  benchmarks/results/gpu-stages.json benchmarks/results/gpu-stages-torchrun.json > docs/performance.md
```

Dropped: earlier versions of the suite also timed the prepare stage and CPU evaluation (with peak
memory), epoch time against training-set size, the peak memory of the memory-mapped cache at 1x-16x
its size, and GPU evaluation throughput. That code was removed to keep `benchmarks/` in proportion
to the package; the committed CPU JSON still holds those figures, and this page's git history shows
them, but they are no longer rendered here.
"""

METHOD = """\
## How it is measured

- **Pipeline vs ceiling.** Both run the package's own `train_one_epoch` with the same model,
  optimizer, batch size, precision and memory layout. The pipeline is fed as `fit` feeds it:
  rows gathered from the memory-mapped uint8 cache by `iterate_batches`, `random_flips`,
  `to_model_input` (on CUDA the cache is on the GPU when it fits: `images_on_device`). The ceiling
  is fed one random batch that is already normalised model input in memory. The two alternate,
  so drift hits both; ratio = median pipeline / median ceiling.
- **Naive loop.** The seed's loop: torchvision `ImageFolder` on `data/raw` with `Resize`,
  `CenterCrop`, random flips, `ToTensor`, `Normalize` every epoch, fp32, contiguous layout,
  batch 32, a default `DataLoader` (no workers). Same initial weights (`init_model`), optimizer and
  schedule (`make_optimizer`), epochs and splits as the fast path (`fit`); both keep the
  best-validation epoch and are scored on the same test images, so accuracy is compared pairwise
  with an exact McNemar test (`mcnemar_exact`; p >= 0.05: no detectable difference). Epoch time
  excludes validation on both sides.
- **Precision.** The grid steps the compute ceiling for each precision and layout; the accuracy
  check is `fit` at fp32 against `fit` at `train.precision: auto`, same data path, same seed.
  The instruction-set rows rerun the grid in a fresh process with `ONEDNN_MAX_CPU_ISA` set.
- **No-op run.** `dvc status` and `dvc repro` in the real repo when `dvc status` reports nothing
  changed (a tiny temporary project in quick mode).
"""

DECISIONS = """\
## Decisions taken from the committed figures (written by hand in `benchmarks/report.py`)

- `train.precision: auto` on CUDA: the GPU run above resolved `auto` to bf16 (the rule then). fp32
  with TF32 convolutions was the fastest for both models on the H200 at equal accuracy (Lite0
  3518 vs 2325 img/s, ResNet18 7246 vs 6572), so `auto` now resolves to fp32 on CUDA
  (`src/tvs/compute/runtime.py`). On the CPU, bf16 with channels-last stays the default where the
  CPU has native bf16 (2.16x fp32 contiguous here), and fp32 elsewhere (bf16 without the
  instructions ran at 0.07x-0.44x of fp32).
- The 3x per-epoch speed-up over the naive loop was **not** reached on this CPU: 1.62x. Both
  loops are bound by the model's compute (the fast path runs at 0.94 of the pure-compute
  ceiling); the naive loop's decoding costs less than the issue assumed on this machine, and its
  fp32 at batch 32 is not far below our bf16 at batch 64 for this small model.
- `torch.compile` on the GPU was not measured: the lent GPU's time ran out (the script skips what
  its time budget cannot fit and says so above).
- The pipeline end to end on the H200 (the two `stages` sections): 134 s for training, scoring and
  the verdict as dvc runs them, against 15 min 16 s for `make repro` on the 2-core reference CPU
  (training 430 s per arm there). Most of the GPU time is the first epoch of each training
  process (20-47 s: CUDA start-up and cuDNN's autotuning, `cudnn.benchmark`); later epochs take
  0.4-0.9 s. `prepare` was not rerun there (the machine has no dvc and no `elpv-dataset`): its
  cache travelled in `.gpu/` and `md5sum` matched the reference CPU's `images.npy` byte for byte.
  The same verdict both times (+6.7 and +8.0 pp, McNemar p < 0.001), as on the CPU (+5.5 pp).
- Under `torchrun --nproc-per-node 1` the training stages ran as a one-rank NCCL process group
  (DDP, SyncBatchNorm): steady epochs 0.84 s against 0.62 s without it (pretrained), the price of
  DDP's hooks and SyncBatchNorm's collectives with nothing to share; `train.nproc: 1` (no torchrun)
  stays the default on one GPU.
"""

# (measure, goal, where the value lies in a CPU run, whether it is met)
GOALS = [
    ("pipeline / compute ceiling", ">= 0.90", "pipeline.ratio", lambda v: v >= 0.9),
    ("per-epoch speed-up over the naive loop", ">= 3x", "naive.speedup_vs_naive", lambda v: v >= 3.0),
    ("test accuracy, fast vs naive (McNemar p)", "p >= 0.05", "naive.accuracy_fast_vs_naive.mcnemar_p",
     lambda v: v >= 0.05),
    ("test accuracy, auto precision vs fp32 (McNemar p)", "p >= 0.05", "naive.accuracy_auto_vs_fp32.mcnemar_p",
     lambda v: v >= 0.05),
    ("no-op `dvc repro` (s)", "< 3", "overhead.dvc.dvc_repro_noop_s.median", lambda v: v < 3.0),
]  # fmt: skip


def goal_rows(run: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    """Measure, value, goal and whether it is met (None: not measured), for each goal."""
    rows = []
    for measure, goal, path, ok in GOALS:
        value: Any = run
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        rows.append((measure, value, goal, None if value is None or math.isnan(value) else ok(value)))
    return rows


def fmt(value: Any, digits: int = 2) -> str:
    """Numbers for tables: fixed digits, ``-`` for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** (-digits) or value == 0 else f"{value:.2g}"
    return str(value)


def spread(summary: dict[str, Any] | None, digits: int = 1) -> str:
    """``median [min-max]`` of a summary (``-`` if absent)."""
    if not summary:
        return "-"
    return f"{fmt(summary['median'], digits)} [{fmt(summary['min'], digits)}-{fmt(summary['max'], digits)}]"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table, as lines (a blank line after it)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*out, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def section_machine(run: dict[str, Any]) -> list[str]:
    """Where, when and how a run was measured."""
    m = run["machine"]
    lines = [f"Machine: **{m.get('gpu') or m['host_cpu']}**" + (f" (host {m['host_cpu']})" if m.get("gpu") else "")]
    lines.append(
        f"{m['cores']} cores, {m['memory_gb']} GB RAM, CPU features {', '.join(m['cpu_flags']) or '-'} "
        f"(torch kernels: {m['torch_cpu_capability']}); Python {m['python']}, torch {m['torch']}"
        + (f", CUDA {m['cuda']}" if m.get("cuda") else "")
    )
    lines.append(f"Date {m['date']}, commit `{m.get('git_commit')}`, command `{m['command']}`")
    if d := run.get("dataset"):
        lines.append(
            f"Data: {d['images']} images ({d['train_images']} train) at {d['image_size']} px from `{d['raw']}`"
        )
    return ["", *[line + "  " for line in lines], ""]


def section_goals(run: dict[str, Any]) -> list[str]:
    met = {None: "not measured", True: "yes", False: "**no**"}
    rows = [[measure, fmt(value, 3), goal, met[ok]] for measure, value, goal, ok in goal_rows(run)]
    return ["### Goals", "", *table(["measure", "value", "goal", "met"], rows)]


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
    d = o["dvc"]
    where = "a tiny temporary project" if d.get("tiny_temporary_repo") else "the project repository"
    repro = spread(d["dvc_repro_noop_s"], 2) if "dvc_repro_noop_s" in d else f"not run: {d.get('skipped')}"
    rows = [["`dvc status` (nothing changed)", spread(d["dvc_status_s"], 2)], ["`dvc repro` (nothing changed)", repro]]
    return ["### No-op run", "", *table(["step", "seconds"], rows), f"DVC timed in {where}.", ""]


CPU_SECTIONS = {
    "precision": section_precision,
    "isa": section_isa,
    "pipeline": section_pipeline,
    "naive": section_naive,
    "overhead": section_overhead,
}


def section_cpu(run: dict[str, Any]) -> list[str]:
    lines = [f"## CPU ({run['settings']['mode']} run)", *section_machine(run), *section_goals(run)]
    for key, render_section in CPU_SECTIONS.items():
        if key in run:
            lines += render_section(run[key])
    return lines


def gpu_row(run: dict[str, Any], precision: str, arch: str = "tf_efficientnet_lite0") -> dict[str, Any] | None:
    """The measured throughput row of ``arch`` at ``precision``, channels-last, cache on device, eager."""
    wanted = {"arch": arch, "precision": precision, "channels_last": True, "compile": False, "cache": "device"}
    return next((r for r in run["throughput"] if wanted.items() <= r.items() and "ratio" in r), None)


def section_gpu(run: dict[str, Any]) -> list[str]:
    """The GPU run: pipeline vs ceiling per setting, and the real ``fit`` at each precision."""
    lines = ["## GPU", *section_machine(run)]
    if run.get("resnet18_input"):
        lines += [f"ResNet18 input: {run['resnet18_input']}.", ""]
    rows = []
    for r in run["throughput"]:
        status = r.get("skipped") or r.get("error")
        cells = [status, "-", "-"] if status else [spread(r["pipeline_img_s"], 0), spread(r["ceiling_img_s"], 0)]
        cells += [] if status else [f"**{fmt(r['ratio'])}**"]
        rows.append([r["arch"], r["image_size"], r["batch_size"], r["precision"], fmt(r["channels_last"]),
                     fmt(r["compile"]), r["cache"], *cells])  # fmt: skip
    header = ["arch", "px", "batch", "precision", "channels-last", "compile", "cache", "pipeline img/s"]
    lines += ["### Training throughput", "", *table([*header, "ceiling img/s", "ratio"], rows)]
    if default := gpu_row(run, "bf16"):
        met = "yes" if default["ratio"] >= 0.9 else "**no**"
        lines += [
            f"Goal, default model (bf16, channels-last): pipeline / ceiling {fmt(default['ratio'])} >= 0.90: {met}",
            "",
        ]
    rows = []
    for r in run["fit"]:
        ceiling = gpu_row(run, r.get("amp_dtype", ""))
        share = r["train_img_s"] / ceiling["ceiling_img_s"]["median"] if ceiling and "train_img_s" in r else None
        rows.append([r["precision"], r.get("amp_dtype", "-"), fmt(r.get("train_img_s"), 0), fmt(share),
                     spread(r.get("epoch_seconds"), 2), fmt(r.get("best_val_accuracy"), 4),
                     fmt(r.get("test_accuracy"), 4), r.get("skipped") or r.get("error", "")])  # fmt: skip
    header = ["train.precision", "autocast", "train img/s", "of ceiling", "epoch s (2..)", "best val acc", "test acc"]
    arm = run["fit"][0]["arm"] if run["fit"] else "pretrained"
    lines += [f"### The real `fit`, default params, {arm} arm (stage throughput and accuracy check)", ""]
    return lines + table([*header, "note"], rows)


def section_stages(run: dict[str, Any]) -> list[str]:
    """The pipeline run by its stage commands (``benchmarks.stages``): seconds per stage, the verdict's figures."""
    how = (
        f"under `torchrun --nproc-per-node {run['torchrun_nproc']}`"
        if run.get("torchrun_nproc")
        else "as dvc runs them"
    )
    lines = [f"## The pipeline end to end, training stages {how}", *section_machine(run)]
    if run.get("skipped"):
        lines += [f"Not run (outputs already in place): {', '.join(run['skipped'])}.", ""]
    rows = [[r["stage"], fmt(r["seconds"], 1), r["returncode"]] for r in run["stages"]]
    lines += table(["stage", "seconds", "exit code"], [*rows, ["**total**", f"**{fmt(run['total_seconds'], 1)}**", ""]])
    if f := run.get("figures"):
        rows = [
            [arm, f"{100 * f[arm]['accuracy']:.1f}% ({100 * f[arm]['accuracy_ci_low']:.1f}-"
             f"{100 * f[arm]['accuracy_ci_high']:.1f})", fmt(f[arm]["best_val_accuracy"], 4), f[arm]["best_epoch"],
             fmt(f[arm]["train_seconds"], 1), fmt(f[arm]["epoch_seconds"][0], 1),
             spread(summarize_values(f[arm]["epoch_seconds"][1:]), 2)]
            for arm in ("pretrained", "scratch")
        ]  # fmt: skip
        header = ["arm", "test acc (Wilson 95%)", "best val acc", "best epoch", "train s", "epoch 1 s", "epoch s (2..)"]
        sig = f["comparison"]["significance"]
        lines += [*table(header, rows)]
        lines += [
            f"Difference {100 * sig['accuracy_diff']:+.1f} pp (95% CI {100 * sig['accuracy_diff_ci_low']:.1f} to "
            f"{100 * sig['accuracy_diff_ci_high']:.1f}), McNemar p = {sig['mcnemar_p']:.2g}; majority baseline "
            f"{100 * f['comparison']['majority_accuracy']:.1f}%.",
            "",
        ]
    return lines


def summarize_values(values: list[float]) -> dict[str, Any] | None:
    """Median, min and max of ``values`` (None when empty), as :func:`spread` reads them."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


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
    for run in runs:
        if run.get("kind") == "stages":
            lines += section_stages(run)
    return "\n".join([*lines, METHOD, DECISIONS if runs else ""]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    for path in paths:
        if not path.exists():
            print(f"benchmarks.report: {path}: no such file, left out", file=sys.stderr)
    sys.stdout.write(render([json.loads(p.read_text()) for p in paths if p.exists()]))


if __name__ == "__main__":
    main()
