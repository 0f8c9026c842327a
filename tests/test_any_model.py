"""Any timm or torchvision model, weights from the Hub, torchvision or a file, and the optimizer.

The online sources keep their real loading code and are tested offline by seeding the caches
those loaders read: the Hugging Face Hub's ``models--org--name/snapshots/<rev>/`` layout under
``HF_HOME`` (with ``HF_HUB_OFFLINE=1``), and ``$TORCH_HOME/hub/checkpoints`` for torchvision.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tvs.config import load_params
from tvs.data.prepare import prepare_dataset
from tvs.data.prepared import load_prepared
from tvs.errors import ConfigError, WeightsError
from tvs.models.archs import arch_spec, build_model, classifier_name, set_backbone_trainable
from tvs.models.sources import parse_hub
from tvs.models.weights import init_model, load_pretrained, normalisation

from .conftest import ENV, REPRODUCED_PARAMS, dvc, fit_arm, ran_stages, run_ok, write_params

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("arch", "head"),
    [
        ("timm:convnext_atto", "head.fc"),
        ("timm:resnet10t", "fc"),
        ("torchvision:mobilenet_v3_small", "classifier.3"),
        ("tf_efficientnet_lite0", "classifier"),  # the names of earlier versions keep working
        ("resnet18", "fc"),
    ],
)
def test_any_timm_or_torchvision_model_builds_with_its_head_found_generically(arch: str, head: str):
    model = build_model(arch, 3)
    assert classifier_name(model) == head
    assert dict(model.named_modules())[head].out_features == 3
    set_backbone_trainable(model, trainable=False)  # what freeze_epochs does
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{head}.weight", f"{head}.bias"}
    set_backbone_trainable(model, trainable=True)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "closest"),
    [
        ("timm:convnxt_atto", "timm:convnext_atto"),
        ("convnext_atto", "timm:convnext_atto"),  # a timm name without its prefix
        ("torchvision:mobilenet_v3_smal", "torchvision:mobilenet_v3_small"),
    ],
)
def test_an_unknown_arch_stops_with_one_line_naming_the_closest_valid_names(arch: str, closest: str):
    with pytest.raises(ConfigError) as err:
        arch_spec(arch)
    message = str(err.value)
    assert message.startswith(f"model.arch: unknown architecture {arch!r}; closest: ")
    assert closest in message.split("closest: ")[1].split(" (")[0].split(", ")
    assert "\n" not in message


def test_each_arch_normalises_as_its_default_pretrained_weights_do():
    assert arch_spec("tf_efficientnet_lite0").mean == (0.5, 0.5, 0.5)  # timm's pretrained_cfg of the TF port
    assert arch_spec("timm:convnext_atto").mean == (0.485, 0.456, 0.406)
    assert arch_spec("torchvision:mobilenet_v3_small").std == (0.229, 0.224, 0.225)


def test_hub_names_parse_with_an_optional_revision():
    assert parse_hub("hf-hub:org/name") == ("org/name", None)
    assert parse_hub(f"hf-hub:org/name@{REVISION}") == ("org/name", REVISION)
    for bad in ("hf-hub:name", "hf-hub:org/name@", "hf-hub:a/b/c"):
        with pytest.raises(WeightsError, match="expected hf-hub:<org>/<name>"):
            parse_hub(bad)


# --- the Hugging Face Hub, offline, through a seeded cache ----------------------------------------


def seed_hub_cache(hf_home: Path, repo: str, mean: tuple[float, float, float]) -> dict[str, torch.Tensor]:
    """A small timm model saved by timm's own ``save_for_hf`` into the Hub cache's layout; its state."""
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(7)
    model = timm.create_model("test_resnet", num_classes=1000)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": mean, "std": (0.2, 0.2, 0.2)}
    cache = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = cache / "snapshots" / REVISION
    save_for_hf(model, str(snapshot), safe_serialization=True)
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(REVISION)
    return load_file(str(snapshot / "model.safetensors"))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, torch.Tensor]]:
    hf_home = tmp_path / "hf"
    state = seed_hub_cache(hf_home, "tvs-test/tiny-resnet", mean=(0.4, 0.4, 0.4))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(ENV, "HF_HOME", str(hf_home))
    import huggingface_hub.constants as hub_constants  # read once at import: point it at the test's cache

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return hf_home, state


def test_hub_weights_and_preprocessing_load_offline_from_the_cache(hub_cache):
    _, cached = hub_cache
    for name in ("hf-hub:tvs-test/tiny-resnet", f"hf-hub:tvs-test/tiny-resnet@{REVISION}"):
        pretrained = load_pretrained("timm:test_resnet", name)
        assert pretrained.state.keys() == cached.keys()
        assert all(torch.equal(pretrained.state[k], cached[k]) for k in cached)
        assert pretrained.source["commit"] == REVISION and pretrained.source["repo"] == "tvs-test/tiny-resnet"
    params = load_params(
        write_params(
            hub_cache[0] / "p.yaml", model={"arch": "timm:test_resnet", "weights": "hf-hub:tvs-test/tiny-resnet"}
        )
    )
    assert normalisation(params.model) == ((0.4, 0.4, 0.4), (0.2, 0.2, 0.2))  # the repo's config.json
    with pytest.raises(WeightsError, match="holds a test_resnet, not a resnet10t; set model.arch: timm:test_resnet"):
        load_pretrained("timm:resnet10t", "hf-hub:tvs-test/tiny-resnet")


def test_a_repo_missing_from_the_cache_offline_is_one_line_naming_where_it_would_go(hub_cache):
    hf_home, _ = hub_cache
    with pytest.raises(WeightsError) as err:
        load_pretrained("timm:test_resnet", "hf-hub:nobody/missing")
    message = str(err.value)
    assert message.startswith("model.weights: hf-hub:nobody/missing: config.json is not in the Hugging Face cache (")
    assert str(hf_home / "hub" / "models--nobody--missing" / "snapshots") in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message


@pytest.mark.e2e
def test_the_pipeline_fine_tunes_hub_weights_offline_and_records_their_source(tiny_repo: Path, hub_cache):
    _, cached = hub_cache
    weights = f"hf-hub:tvs-test/tiny-resnet@{REVISION}"
    # A learning rate so small that the trained parameters are the initial ones to float precision.
    root = tiny_repo
    write_params(
        root / "params.yaml", **REPRODUCED_PARAMS, lr=1e-12, model={"arch": "timm:test_resnet", "weights": weights},
        train={"weight_decay": 0.0},
    )  # fmt: skip
    training = {"train_pretrained", "train_scratch"}  # what the test asserts on; scoring is tested elsewhere
    assert ran_stages(dvc(root, "repro", *sorted(training))) == training
    trained = load_file(str(root / "models" / "pretrained" / "model.safetensors"))
    backbone = [k for k in cached if not k.startswith("fc.") and "running_" not in k and "num_batches" not in k]
    assert len(backbone) > 10
    for key in backbone:
        torch.testing.assert_close(trained[key], cached[key], rtol=0, atol=1e-6)
    meta = json.loads((root / "models" / "pretrained" / "meta.json").read_text())
    source = meta["weights_source"]
    assert source["kind"] == "hf-hub" and source["commit"] == REVISION and len(source["sha256"]) == 64
    assert meta["mean"] == [0.4, 0.4, 0.4]  # the repo's own preprocessing config
    scratch = json.loads((root / "models" / "scratch" / "meta.json").read_text())
    assert scratch["mean"] == [0.4, 0.4, 0.4] and scratch["weights_source"] is None  # both arms alike


@pytest.mark.e2e
def test_a_missing_repo_stops_the_stage_with_one_line_and_writes_nothing(tiny_repo: Path, hub_cache):
    root = tiny_repo  # prepare has run
    write_params(root / "params.yaml", model={"arch": "timm:test_resnet", "weights": "hf-hub:nobody/missing"})
    shutil.rmtree(root / "models" / "pretrained")
    shutil.rmtree(root / "dvclive" / "pretrained")
    cmd = [sys.executable, "src/stages/train.py", "--arm", "pretrained", "--params", "params.yaml"]
    cmd += ["--data", "data/prepared", "--out", "models/pretrained", "--live", "dvclive/pretrained"]
    import subprocess

    proc = subprocess.run(cmd, cwd=root, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("train: error: model.weights: hf-hub:nobody/missing: config.json is not in the Hugging")
    assert "Traceback" not in proc.stderr
    assert not (root / "models" / "pretrained").exists() and not (root / "dvclive" / "pretrained").exists()


# --- torchvision, offline, through a seeded torch hub cache ---------------------------------------


@pytest.mark.e2e
def test_a_torchvision_arch_fine_tunes_from_a_seeded_torch_hub_cache(tiny_repo: Path, tmp_path, monkeypatch):
    import torchvision

    weights = torchvision.models.get_model_weights("mobilenet_v3_small").IMAGENET1K_V1
    torch.manual_seed(3)
    seeded = build_model("torchvision:mobilenet_v3_small", 1000).state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(seeded, checkpoints / Path(weights.url).name)  # the file torchvision's loader looks for
    monkeypatch.setitem(ENV, "TORCH_HOME", str(tmp_path / "torch"))
    root = tiny_repo
    write_params(
        root / "params.yaml", **REPRODUCED_PARAMS, lr=1e-12,
        model={"arch": "torchvision:mobilenet_v3_small", "weights": "IMAGENET1K_V1"}, train={"weight_decay": 0.0},
    )  # fmt: skip
    run_ok([sys.executable, "-m", "dvc", "repro", "train_pretrained"], root)
    trained = load_file(str(root / "models" / "pretrained" / "model.safetensors"))
    backbone = [k for k in seeded if k.startswith("features.") and seeded[k].is_floating_point() and "running" not in k]
    for key in backbone:
        torch.testing.assert_close(trained[key], seeded[key], rtol=0, atol=1e-6)
    meta = json.loads((root / "models" / "pretrained" / "meta.json").read_text())
    assert meta["weights_source"]["weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"


# --- the optimizer ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_data(imagefolder: Path, tmp_path: Path):
    params = load_params(write_params(tmp_path / "params.yaml"))
    prepare_dataset(raw=imagefolder, out=tmp_path / "prep", params=params, summary_path=tmp_path / "s.json")
    return load_prepared(tmp_path / "prep")


def test_sgd_and_adamw_runs_of_the_same_arm_differ(tiny_data, tmp_path: Path):
    finals = {}
    for optimizer in ("adamw", "sgd"):
        params = load_params(write_params(tmp_path / f"{optimizer}.yaml", train={"optimizer": optimizer}))
        fit_arm(params, tiny_data, "scratch", tmp_path / optimizer)
        finals[optimizer] = load_file(str(tmp_path / optimizer / "model.safetensors"))
    assert finals["adamw"].keys() == finals["sgd"].keys()
    assert not torch.equal(finals["adamw"]["classifier.weight"], finals["sgd"]["classifier.weight"])


def test_sgd_uses_momentum_and_nesterov_from_params(tiny_data, tmp_path: Path):
    from tvs.train.loop import make_optimizer

    params = load_params(
        write_params(tmp_path / "p.yaml", train={"optimizer": "sgd", "momentum": 0.8, "nesterov": True})
    )
    optimizer, _ = make_optimizer(init_model(params, params.scratch, 2).model, 0.01, params.train, 3)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["lr"]) == (0.8, True, 0.01)
