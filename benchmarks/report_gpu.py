"""The GPU run's part of docs/performance.md (see ``benchmarks.report``)."""

from __future__ import annotations

from typing import Any

from benchmarks.summary import fmt, section_machine, spread, table


def gpu_row(run: dict[str, Any], precision: str, arch: str = "tf_efficientnet_lite0") -> dict[str, Any] | None:
    """The measured throughput row of ``arch`` at ``precision``, channels-last, cache on device, eager."""
    wanted = {"arch": arch, "precision": precision, "channels_last": True, "compile": False, "cache": "device"}
    rows = [r for r in run["throughput"] if all(r.get(k) == v for k, v in wanted.items()) and "ratio" in r]
    return rows[0] if rows else None


def gpu_throughput(run: dict[str, Any]) -> list[str]:
    rows = []
    for r in run["throughput"]:
        status = r.get("skipped") or r.get("error")
        cells = (
            [] if status else [spread(r["pipeline_img_s"], 0), spread(r["ceiling_img_s"], 0), f"**{fmt(r['ratio'])}**"]
        )
        rows.append([r["arch"], r["image_size"], r["batch_size"], r["precision"], fmt(r["channels_last"]),
                     fmt(r["compile"]), r["cache"], *(cells if not status else [status, "-", "-"])])  # fmt: skip
    header = ["arch", "px", "batch", "precision", "channels-last", "compile", "cache", "pipeline img/s"]
    lines = ["### Training throughput", "", *table([*header, "ceiling img/s", "ratio"], rows)]
    default = gpu_row(run, "bf16")
    if default:
        met = "yes" if default["ratio"] >= 0.9 else "**no**"
        lines += [
            f"Goal, default model (bf16, channels-last): pipeline / ceiling {fmt(default['ratio'])} >= 0.90: {met}",
            "",
        ]
    return lines


def gpu_fits(run: dict[str, Any]) -> list[str]:
    rows = []
    for r in run["fit"]:
        ceiling = gpu_row(run, r.get("amp_dtype", ""))
        share = r["train_img_s"] / ceiling["ceiling_img_s"]["median"] if ceiling and "train_img_s" in r else None
        rows.append([r["precision"], r.get("amp_dtype", "-"), fmt(r.get("train_img_s"), 0), fmt(share),
                     spread(r.get("epoch_seconds"), 2), fmt(r.get("best_val_accuracy"), 4),
                     fmt(r.get("test_accuracy"), 4), r.get("skipped") or r.get("error", "")])  # fmt: skip
    header = ["train.precision", "autocast", "train img/s", "of ceiling", "epoch s (2..)", "best val acc", "test acc"]
    arm = run["fit"][0]["arm"] if run["fit"] else "pretrained"
    title = f"### The real `fit`, default params, {arm} arm (stage throughput and accuracy check)"
    return [title, "", *table([*header, "note"], rows)]


def section_gpu(run: dict[str, Any]) -> list[str]:
    lines = ["## GPU", *section_machine(run)]
    if run.get("resnet18_input"):
        lines += [f"ResNet18 input: {run['resnet18_input']}.", ""]
    lines += gpu_throughput(run) + gpu_fits(run)
    evals = [[r["precision"], r.get("batch_size", "-"), spread(r.get("img_s"), 0)] for r in run["evaluate"]]
    lines += ["### Evaluation throughput (test split)", "", *table(["precision", "batch", "img/s"], evals)]
    return lines + [f"Section failed: `{err}`" for err in run.get("errors", [])]
