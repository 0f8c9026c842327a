"""Faults: a diverging arm, an interrupted run that resumes, and a training stage killed by a real
SIGKILL under `dvc repro`, after which `dvc repro` recovers to the uninterrupted result."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tvs.compute.runtime import seed_everything
from tvs.config import load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import MANIFEST, load_prepared
from tvs.evaluate.metrics import METRIC_KEYS
from tvs.evaluate.scoring import evaluate_arms, predict_arm
from tvs.models.archs import build_model
from tvs.models.checkpoint import load_checkpoint
from tvs.train import loop
from tvs.train.resume import STATE, ResumeSpec, fingerprint

from .conftest import ENV, REPRODUCED_PARAMS, dvc, fit_arm, same_weights, write_imagefolder, write_params
from .stage_runner import make_project, run_stage, train_cmd

HUGE_LR = 1e12  # AdamW's decoupled weight decay multiplies weights by (1 - lr * wd) each step: overflow


@pytest.fixture
def prepared(imagefolder: Path, tmp_path: Path):
    params = load_params(write_params(tmp_path / "params.yaml", train={"epochs": 3}))
    prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    return params, load_prepared(tmp_path / "prep")


def _timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


# --- divergence --------------------------------------------------------------------------------


def test_a_huge_lr_stops_the_arm_and_keeps_the_initial_weights_flagged(prepared, tmp_path: Path, caplog):
    params, data = prepared
    with caplog.at_level(logging.WARNING):
        result = fit_arm(dataclasses.replace(params, lr=HUGE_LR), data, "scratch", tmp_path / "m")
    assert result.diverged_epoch == 1 and result.best_epoch == 0 and result.history == []
    assert (
        "mean training loss of epoch 1 is nan: training diverged (try a lower lr). "
        "Stopping this arm; its checkpoint keeps the initial weights."
    ) in caplog.messages
    model, meta = load_checkpoint(tmp_path / "m")
    assert meta["diverged"] is True and meta["diverged_epoch"] == 1 and meta["best_epoch"] == 0
    seed_everything(params.seed)
    assert same_weights(model.state_dict(), build_model(params.model.arch, 2).state_dict())


def _poison_epoch(monkeypatch: pytest.MonkeyPatch, bad_epoch: int) -> None:
    """Fill one weight with NaN at the start of ``bad_epoch``: the real detection must catch it."""
    original = loop.train_one_epoch

    def poisoned(model, batches, *args):
        if args[-1] == bad_epoch:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return original(model, batches, *args)

    monkeypatch.setattr(loop, "train_one_epoch", poisoned)


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory: pytest.TempPathFactory):
    """Both arms trained 3 epochs, the scratch arm poisoned in epoch 2, then evaluated into ``metrics/``."""
    root = tmp_path_factory.mktemp("diverged")
    params = load_params(write_params(root / "params.yaml", train={"epochs": 3}))
    raw = write_imagefolder(root / "raw", {"cats": 12, "dogs": 12})
    prepare_dataset(raw=raw, out=root / "prep", params=params, summary_path=root / "s.json")
    data = load_prepared(root / "prep")
    fit_arm(params, data, "pretrained", root / "pretrained")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _poison_epoch(monkeypatch, bad_epoch=2)
        result = fit_arm(params, data, "scratch", root / "scratch")
    models = {"pretrained": root / "pretrained", "scratch": root / "scratch"}
    evaluate_arms(models=models, data_dir=root / "prep", metrics_dir=root / "metrics", eval_dir=root / "eval")
    return root, result


def test_divergence_after_a_good_epoch_keeps_the_best_weights_and_evaluate_flags_it(diverged_run):
    root, result = diverged_run
    assert result.diverged_epoch == 2 and result.best_epoch == 1 and len(result.history) == 1
    probs, labels, meta = predict_arm(root / "scratch", root / "prep", split="val")
    assert meta["diverged"] is True and meta["diverged_epoch"] == 2
    assert (probs.argmax(1) == labels).mean() == pytest.approx(result.history[0]["val_accuracy"], abs=1e-9)

    arms = {arm: json.loads((root / "metrics" / f"{arm}.json").read_text()) for arm in ("pretrained", "scratch")}
    assert arms["pretrained"].keys() == arms["scratch"].keys()
    assert (arms["scratch"]["diverged"], arms["scratch"]["diverged_epoch"]) == (1, 2)
    assert (arms["pretrained"]["diverged"], arms["pretrained"]["diverged_epoch"]) == (0, 0)
    comparison = json.loads((root / "metrics" / "comparison.json").read_text())
    assert comparison["diverged"] == 1 and all(comparison[key] is None for key in METRIC_KEYS)
    assert (comparison["pretrained_diverged_epoch"], comparison["scratch_diverged_epoch"]) == (0, 2)


@pytest.mark.e2e
def test_dvc_metrics_show_still_shows_the_files_of_a_diverged_run(diverged_run):
    root, _ = diverged_run
    dvc(root, "init", "--no-scm", "-q")
    shown = dvc(root, "metrics", "show", "metrics/pretrained.json", "metrics/comparison.json")
    assert "metrics/comparison.json" in shown and "diverged" in shown and "-" in shown  # nulls shown as "-"


@pytest.mark.e2e
def test_lr_10_explodes_the_loss_and_the_stage_exits_0_so_dvc_keeps_the_flagged_checkpoint(imagefolder, tmp_path):
    # `dvc exp run -S lr=10`: with AdamW and BatchNorm the loss stays finite but runs into the thousands.
    project = make_project(tmp_path / "project", imagefolder, lr=10)
    proc = run_stage(project, train_cmd("scratch"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(
        r"\[train\] mean training loss of epoch 1 is \d+(\.\d+)?(e\+\d+)?, over 17\.33 \(25 x ln C\): training "
        r"diverged \(try a lower lr\)\. Stopping this arm; its checkpoint keeps the initial weights\.\n",
        proc.stderr,
    ), proc.stderr
    assert "[train] scratch: diverged at epoch 1; evaluate will report it as diverged\n" in proc.stderr
    meta = json.loads((project / "models" / "scratch" / "meta.json").read_text())
    assert meta["diverged"] is True and meta["diverged_epoch"] == 1
    assert (project / "models" / "scratch" / "model.safetensors").is_file()


# --- resume (in process) ---------------------------------------------------------------------


class Interrupted(Exception):
    """Stands in for a Ctrl-C or a kill between two epochs."""


def _interrupt_at(monkeypatch, epoch: int) -> None:
    original = loop.train_one_epoch

    def interrupted(model, batches, *args):
        if args[-1] == epoch:
            raise Interrupted
        return original(model, batches, *args)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted)


def test_an_interrupted_fit_resumes_after_its_last_epoch_and_matches_an_uninterrupted_one(
    prepared, tmp_path: Path, monkeypatch, caplog
):
    params, data = prepared
    reference = fit_arm(params, data, "scratch", tmp_path / "ref")
    spec = ResumeSpec(tmp_path / "resume", fingerprint(params, "scratch", tmp_path / "prep" / MANIFEST))

    _interrupt_at(monkeypatch, epoch=3)
    with pytest.raises(Interrupted):
        fit_arm(params, data, "scratch", tmp_path / "run", resume=spec)
    saved = torch.load(spec.folder / STATE, weights_only=True)
    assert saved["epoch"] == 2 and len(saved["result"]["history"]) == 2
    monkeypatch.undo()

    shutil.rmtree(tmp_path / "run")  # as DVC does before it reruns a stage
    with caplog.at_level(logging.INFO):
        resumed = fit_arm(params, data, "scratch", tmp_path / "run", resume=spec)
    assert f"resuming after epoch 2 from {spec.folder / STATE}" in caplog.messages
    assert _timeless(resumed.history) == _timeless(reference.history)
    assert resumed.best_epoch == reference.best_epoch
    assert same_weights(
        load_file(tmp_path / "run" / "model.safetensors"), load_file(tmp_path / "ref" / "model.safetensors")
    )
    assert not spec.folder.exists()  # a finished run forgets its state


def test_resume_state_from_other_params_or_a_damaged_file_is_ignored(prepared, tmp_path: Path, monkeypatch, caplog):
    params, data = prepared
    spec = ResumeSpec(tmp_path / "resume", fingerprint(params, "scratch", tmp_path / "prep" / MANIFEST))
    _interrupt_at(monkeypatch, epoch=2)
    with pytest.raises(Interrupted):
        fit_arm(params, data, "scratch", tmp_path / "run", resume=spec)
    other = dataclasses.replace(params, lr=params.lr * 2)
    other_spec = ResumeSpec(spec.folder, fingerprint(other, "scratch", tmp_path / "prep" / MANIFEST))
    assert other_spec.fingerprint != spec.fingerprint
    with caplog.at_level(logging.WARNING), pytest.raises(Interrupted):
        fit_arm(other, data, "scratch", tmp_path / "run", resume=other_spec)
    assert f"{spec.folder / STATE}: saved for other params, data or code; starting from epoch 1" in caplog.messages

    state = spec.folder / STATE
    state.write_bytes(state.read_bytes()[:1000])  # torn by a full disk, say
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(Interrupted):
        fit_arm(params, data, "scratch", tmp_path / "run", resume=spec)
    assert any(m.startswith(f"{state}: unreadable (") for m in caplog.messages)


# --- a real SIGKILL under `dvc repro` -----------------------------------------------------------

EPOCHS = 12


def _dvc(root: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, **kwargs,
    )  # fmt: skip


@pytest.fixture
def repo(tiny_repo: Path) -> Path:
    """A copy of the reproduced tiny repository, training for ``EPOCHS`` epochs (prepare stays up to date)."""
    write_params(tiny_repo / "params.yaml", **REPRODUCED_PARAMS, train={"epochs": EPOCHS})
    return tiny_repo


def _rows(tsv: Path) -> int:
    return max(0, len(tsv.read_text().splitlines()) - 1) if tsv.exists() else 0


@pytest.mark.e2e
def test_sigkill_mid_training_leaves_no_half_written_output_and_dvc_repro_recovers(repo: Path):
    out, tsv = repo / "models" / "scratch", repo / "dvclive" / "scratch" / "plots" / "metrics" / "train" / "loss.tsv"
    lock = (repo / "dvc.lock").read_text()
    run = _dvc(repo, "repro", "train_scratch", start_new_session=True)  # its own group: dvc and the stage
    deadline = time.monotonic() + 90
    while _rows(tsv) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, f"training ended before it could be killed (raise EPOCHS?):\n{run.communicate()[0]}"
    os.killpg(run.pid, signal.SIGKILL)  # what the OOM killer or a lost node does: no clean-up at all
    run.communicate(timeout=30)

    # Only complete files: each output file that exists loads; a torn write can only be a hidden temp file.
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
    assert visible in ([], ["meta.json", "model.safetensors"], ["model.safetensors"])
    if "model.safetensors" in visible:
        load_file(out / "model.safetensors")
    if "meta.json" in visible:
        assert json.loads((out / "meta.json").read_text())["best_epoch"] >= 1
    hidden = [p.name for p in out.glob(".*")] if out.exists() else []  # ours: .x.*.tmp; safetensors': .tmp*
    assert all(name.endswith(".tmp") or name.startswith(".tmp") for name in hidden), hidden
    saved = torch.load(repo / "models" / ".resume" / "scratch" / STATE, weights_only=True)
    assert 1 <= saved["epoch"] < EPOCHS
    assert (repo / "dvc.lock").read_text() == lock  # DVC recorded nothing of the killed run

    log = dvc(repo, "repro", "train_scratch")
    assert f"resuming after epoch {saved['epoch']} from models/.resume/scratch/{STATE}" in log, log
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors"]  # no stray temp files
    assert not (repo / "models" / ".resume" / "scratch").exists()
    resumed_weights, resumed_meta = load_file(out / "model.safetensors"), json.loads((out / "meta.json").read_text())
    resumed_curve = [line.split("\t")[1:] for line in tsv.read_text().splitlines()]  # step, loss (no timestamp)

    dvc(repo, "repro", "--force", "train_scratch")  # the uninterrupted run, from scratch
    assert same_weights(resumed_weights, load_file(out / "model.safetensors"))
    meta = json.loads((out / "meta.json").read_text())
    assert _timeless(resumed_meta["history"]) == _timeless(meta["history"]) and len(meta["history"]) == EPOCHS
    assert resumed_curve == [line.split("\t")[1:] for line in tsv.read_text().splitlines()]
    assert "Data and pipelines are up to date." in dvc(repo, "status", "train_scratch")
