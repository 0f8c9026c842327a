"""The benchmark suite runs end to end on tiny inputs and writes well-formed results.

Timings are never asserted: only that each measurement exists, is positive, and that every
reported ratio is computed from figures of the same run. ``make bench-quick`` runs these
(``pytest -m bench``); ``make test`` leaves them out.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchmarks import gpu, report
from benchmarks import run as bench_run
from benchmarks.common import PROJECT

pytestmark = [pytest.mark.bench, pytest.mark.e2e]  # slow: the benchmark suite itself runs


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    return bench_run.main(["--quick", "--out", str(out)]), out


def _positive(summary: dict) -> bool:
    return summary["n"] >= 1 and 0 < summary["min"] <= summary["median"] <= summary["max"]


def test_quick_run_writes_every_section_to_json(quick):
    result, out = quick
    written = json.loads(out.read_text())
    assert written["kind"] == "cpu" and written["settings"]["mode"] == "quick"
    assert set(bench_run.SECTIONS) <= set(written) and list(written["section_seconds"]) == list(bench_run.SECTIONS)
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
    assert {(r["amp_dtype"], r["channels_last"]) for r in rows} == {
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)
    }  # fmt: skip
    base = rows[0]["ceiling_img_s"]["median"]
    assert all(r["speedup"] == pytest.approx(r["ceiling_img_s"]["median"] / base) for r in rows)
    assert grid["auto_resolves_to"] in ("fp32", "bf16") and grid["auto_vs_fastest"] > 0


def test_emulated_instruction_sets_compare_bf16_with_fp32(quick):
    rows = quick[0]["isa"]["rows"]
    assert [(r["isa"], r["precision"]) for r in rows] == [
        (i, p) for i in bench_run.EMULATED_ISAS for p in ("fp32", "bf16")
    ]
    for fp32, bf16 in zip(rows[::2], rows[1::2], strict=True):
        assert bf16["bf16_vs_fp32"] == pytest.approx(bf16["ceiling_img_s"]["median"] / fp32["ceiling_img_s"]["median"])


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


def test_noop_dvc_repro_is_timed_only_when_nothing_changed(quick):
    d = quick[0]["overhead"]["dvc"]
    assert d["up_to_date"] and d["tiny_temporary_repo"] and not d["repro_ran_stages"]
    assert _positive(d["dvc_repro_noop_s"]) and _positive(d["dvc_status_s"])


def test_every_goal_is_measured_by_the_quick_run(quick):
    rows = report.goal_rows(quick[0])
    assert len(rows) == len(report.GOALS) and all(met is not None for *_, met in rows)


def test_report_renders_every_section_of_a_run(quick):
    page = report.render([quick[0]])
    titles = ["Goals", "Precision and layout", "bf16 without bf16 instructions", "Pipeline efficiency"]
    titles += ["Against the naive loop", "No-op run", "No GPU run recorded"]
    assert all(title in page for title in titles) and "| not measured |" not in page


def test_report_without_runs_says_how_to_produce_them():
    page = report.render([])
    assert "No CPU run recorded yet" in page and "make bench" in page


def test_committed_results_render_with_the_dropped_sections_named():
    page = report.render([json.loads(p.read_text()) for p in sorted((PROJECT / "benchmarks/results").glob("*.json"))])
    assert "## CPU (full run)" in page and "## GPU" in page and "Dropped:" in page
    assert "training stages under `torchrun --nproc-per-node 1`" in page
    assert "Scaling" not in page and "Memory-mapped cache" not in page


def test_benchmarks_use_only_public_names_of_the_package():
    for path in (PROJECT / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tvs"):
                assert not [a.name for a in node.names if a.name.startswith("_")], path.name
            if isinstance(node, ast.Attribute) and node.attr == "path":  # sys.path edits
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), path.name


def _fake_gpu_dir(folder: Path, n: int = 32, size: int = 32) -> Path:
    """What `.gpu/` holds (gray cache, manifest), tiny; no weights: the smoke test trains scratch."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "gray128.npz", g=rng.integers(0, 256, (n, size, size), dtype=np.uint8))
    split = (["train"] * 16 + ["val"] * 8 + ["test"] * 8)[:n]
    classes = ["a", "b"] * (n // 2)
    paths = [f"{c}/{i}.png" for i, c in enumerate(classes)]
    manifest = pd.DataFrame({"path": paths, "class": classes, "sha1": "0", "split": split})
    manifest.to_csv(folder / "manifest.csv", index=False)
    return folder


def test_gpu_script_smoke_runs_on_cpu_and_writes_json(tmp_path: Path):
    out = tmp_path / "gpu.json"
    gpu_dir = _fake_gpu_dir(tmp_path / "gpudir")
    result = gpu.main(["--quick", "--device", "cpu", "--gpu-dir", str(gpu_dir), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["kind"] == "gpu" and len(written["throughput"]) == len(result["throughput"]) == 10
    done = [r for r in written["throughput"] if "ratio" in r]
    assert {r["arch"] for r in done} == {"tf_efficientnet_lite0", "resnet18"}
    assert all(r["ratio"] == pytest.approx(r["pipeline_img_s"]["median"] / r["ceiling_img_s"]["median"]) for r in done)
    assert [r["precision"] for r in written["fit"]] == ["auto", "fp32", "fp16"]
    assert all("test_accuracy" in r for r in written["fit"]), written["fit"]
    assert "## GPU" in report.render([written])


def test_stage_commands_are_dvc_yamls_in_order_and_torchrun_wraps_only_training(tmp_path):
    from benchmarks import stages

    plain = stages.stage_commands(PROJECT / "dvc.yaml", {"prepare"})
    assert list(plain) == ["train_pretrained", "train_scratch", "evaluate", "verdict"]
    assert plain["evaluate"][1:3] == ["src/stages/evaluate.py", "--params"]
    wrapped = stages.stage_commands(PROJECT / "dvc.yaml", {"prepare"}, torchrun=1)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
    assert wrapped["train_scratch"] == [plain["train_scratch"][0], *launcher, *plain["train_scratch"][1:]]
    assert wrapped["evaluate"] == plain["evaluate"]
    with pytest.raises(SystemExit, match="--skip prepar: not a stage"):
        stages.stage_commands(PROJECT / "dvc.yaml", {"prepar"})
