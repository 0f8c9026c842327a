"""The benchmark suite runs end to end on tiny inputs and writes well-formed results.

Timings are never asserted: only that each measurement exists, is positive, and that every
reported ratio is computed from figures of the same run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchmarks import gpu, report
from benchmarks import run as bench_run
from benchmarks.common import summarize
from benchmarks.scaling import linear_fit
from benchmarks.summary import GOALS, goal_rows

SECTIONS = ("precision", "isa", "pipeline", "naive", "overhead", "scaling", "memory")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    return bench_run.main(["--quick", "--out", str(out)]), out


def _positive(summary: dict) -> bool:
    return summary["n"] >= 1 and summary["min"] > 0 and summary["min"] <= summary["median"] <= summary["max"]


def test_quick_run_writes_every_section_to_json(quick):
    result, out = quick
    written = json.loads(out.read_text())
    assert written["kind"] == "cpu" and written["settings"]["mode"] == "quick"
    assert set(SECTIONS) <= set(written) and set(written["section_seconds"]) == set(SECTIONS)
    assert written["machine"]["cores"] >= 1 and written["machine"]["torch"]
    assert written["dataset"]["train_images"] > 0 and written["pipeline"]["ratio"] == result["pipeline"]["ratio"]


def test_pipeline_ratio_is_pipeline_over_ceiling_of_the_same_run(quick):
    p = quick[0]["pipeline"]
    assert _positive(p["pipeline_img_s"]) and _positive(p["ceiling_img_s"]) and _positive(p["paired_ratio"])
    assert p["ratio"] == pytest.approx(p["pipeline_img_s"]["median"] / p["ceiling_img_s"]["median"])
    assert p["pipeline_img_s"]["n"] == p["ceiling_img_s"]["n"] == 2


def test_precision_grid_covers_both_precisions_and_layouts(quick):
    grid = quick[0]["precision"]
    rows = grid["rows"]
    combos = {(r["amp_dtype"], r["channels_last"]) for r in rows}
    assert combos == {("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    base = rows[0]["ceiling_img_s"]["median"]
    assert all(r["speedup"] == pytest.approx(r["ceiling_img_s"]["median"] / base) for r in rows)
    assert grid["auto_resolves_to"] in ("fp32", "bf16") and grid["auto_vs_fastest"] > 0


def test_emulated_instruction_sets_compare_bf16_with_fp32(quick):
    rows = quick[0]["isa"]["rows"]
    assert {(r["isa"], r["precision"]) for r in rows} == {
        (i, p) for i in bench_run.EMULATED_ISAS for p in ("fp32", "bf16")
    }
    for isa in bench_run.EMULATED_ISAS:
        fp32, bf16 = (next(r for r in rows if (r["isa"], r["precision"]) == (isa, p)) for p in ("fp32", "bf16"))
        assert bf16["bf16_vs_fp32"] == pytest.approx(bf16["ceiling_img_s"]["median"] / fp32["ceiling_img_s"]["median"])


def test_auto_precision_on_cpu_is_bf16_only_with_bf16_instructions(monkeypatch):
    import torch

    from tvs.runtime import resolve_precision

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) is torch.bfloat16


def test_naive_loop_and_fast_path_are_compared_on_the_same_test_images(quick):
    n = quick[0]["naive"]
    runs = n["runs"]
    assert set(runs) == {"naive", "fast_fp32", "fast_auto"}
    assert len({r["test_images"] for r in runs.values()}) == 1
    assert all(_positive(r["epoch_seconds"]) and 0 <= r["test_accuracy"] <= 1 for r in runs.values())
    expected = runs["naive"]["epoch_seconds"]["median"] / runs["fast_auto"]["epoch_seconds"]["median"]
    assert n["speedup_vs_naive"] == pytest.approx(expected)
    delta = runs["fast_auto"]["test_accuracy"] - runs["naive"]["test_accuracy"]
    assert n["accuracy_fast_vs_naive"]["accuracy_delta"] == pytest.approx(delta)
    assert 0 <= n["accuracy_auto_vs_fp32"]["mcnemar_p"] <= 1


def test_overhead_times_a_noop_dvc_repro_prepare_and_evaluation(quick):
    o = quick[0]["overhead"]
    assert o["dvc"]["up_to_date"] and o["dvc"]["tiny_temporary_repo"] and not o["dvc"]["repro_ran_stages"]
    assert _positive(o["dvc"]["dvc_repro_noop_s"]) and _positive(o["dvc"]["dvc_status_s"])
    assert o["prepare"]["images"] == quick[0]["dataset"]["images"] and _positive(o["prepare"]["seconds"])
    assert o["prepare"]["memory_mb"]["peak_rss"] > 0 and _positive(o["evaluate"]["img_s"])


def test_scaling_fits_a_line_through_growing_training_sets(quick):
    s = quick[0]["scaling"]
    sizes = [p["train_images"] for p in s["points"]]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    assert all(_positive(p["epoch_seconds"]) and p["memory_mb"]["peak_rss"] > 0 for p in s["points"])
    assert 0 <= s["fit"]["r2"] <= 1


def test_cache_memory_is_measured_mapped_and_loaded_at_each_size(quick):
    m = quick[0]["memory"]
    assert {(r["factor"], r["mode"]) for r in m["rows"]} == {
        (f, mode) for f in (1, 4) for mode in ("memory-mapped", "loaded")
    }
    mapped = sorted((r for r in m["rows"] if r["mode"] == "memory-mapped"), key=lambda r: r["factor"])
    assert [r["cache_mb"] for r in mapped] == sorted(r["cache_mb"] for r in mapped)
    assert set(m["growth"]) == {"memory-mapped", "loaded"}


def test_every_goal_is_measured_by_the_quick_run(quick):
    rows = goal_rows(quick[0])
    assert [r["key"] for r in rows] == list(GOALS) and all(r["met"] is not None for r in rows)


def test_report_renders_every_section_of_a_run(quick):
    page = report.render([quick[0]])
    titles = ["Goals", "Precision and layout", "bf16 without bf16 instructions", "Pipeline efficiency"]
    titles += ["Against the naive loop", "Pipeline overhead", "Scaling", "Memory-mapped cache", "No GPU run recorded"]
    assert all(title in page for title in titles)
    assert "not measured" not in page


def test_report_without_runs_says_how_to_produce_them():
    page = report.render([])
    assert "No CPU run recorded yet" in page and "make bench" in page


def test_summaries_and_linear_fit():
    s = summarize([3.0, 1.0, 2.0, 4.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 4.0, 4) and s["q1"] <= s["q3"]
    fit = linear_fit([1, 2, 3, 4], [2.0, 4.0, 6.0, 8.0])
    assert fit["slope_s_per_image"] == pytest.approx(2.0) and fit["r2"] == pytest.approx(1.0)


def _fake_gpu_dir(folder: Path, n: int = 32, size: int = 32) -> Path:
    """What `.gpu/` holds (gray cache, manifest), tiny; no weights: the smoke test trains scratch."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "gray128.npz", g=rng.integers(0, 256, (n, size, size), dtype=np.uint8))
    split = (["train"] * 16 + ["val"] * 8 + ["test"] * 8)[:n]
    classes = ["a", "b"] * (n // 2)
    paths = [f"{c}/{i}.png" for i, c in enumerate(classes)]
    pd.DataFrame({"path": paths, "class": classes, "sha1": "0", "split": split}).to_csv(
        folder / "manifest.csv", index=False
    )
    return folder


def test_gpu_script_smoke_runs_on_cpu_and_writes_json(tmp_path: Path, monkeypatch):
    import tvs.weights

    # gpu.main points the weight loader at its folder, as it must on the GPU machine; undo that here.
    monkeypatch.setattr(tvs.weights, "lite0_package_file", tvs.weights.lite0_package_file)
    out = tmp_path / "gpu.json"
    gpu_dir = _fake_gpu_dir(tmp_path / "gpudir")
    result = gpu.main(["--quick", "--device", "cpu", "--gpu-dir", str(gpu_dir), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["kind"] == "gpu" and len(written["throughput"]) == len(result["throughput"]) == 10
    done = [r for r in written["throughput"] if "ratio" in r]
    assert {r["arch"] for r in done} == {"tf_efficientnet_lite0", "resnet18"}
    assert all(r["ratio"] == pytest.approx(r["pipeline_img_s"]["median"] / r["ceiling_img_s"]["median"]) for r in done)
    assert [r["precision"] for r in written["fit"]] == ["auto", "fp32", "fp16"]
    assert any("test_accuracy" in r for r in written["fit"]) and written["evaluate"][0]["img_s"]["median"] > 0
    assert "## GPU" in report.render([written])
