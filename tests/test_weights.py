"""Pretrained weights: the strict Lite0 conversion, a real-photo check, torchvision's cache, files."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tvs.errors import WeightsError
from tvs.models.archs import build_model
from tvs.models.lite0 import LITE0_PACKAGE, convert_lite0, lite0_package_file
from tvs.models.sources import load_file
from tvs.models.weights import load_pretrained, transfer_weights


@pytest.fixture(scope="module")
def lite0_imagenet() -> torch.nn.Module:
    model = build_model("tf_efficientnet_lite0", 1000)
    transfer_weights(model, load_pretrained("tf_efficientnet_lite0", LITE0_PACKAGE).state)
    return model.eval()


def test_conversion_maps_every_key_and_shape():
    source = torch.load(lite0_package_file(), map_location="cpu", weights_only=True)
    target = build_model("tf_efficientnet_lite0", 1000).state_dict()
    converted = convert_lite0(source, target)
    assert converted.keys() == target.keys()
    assert torch.equal(converted["blocks.3.1.conv_pwl.weight"], source["_blocks.6._project_conv.weight"])
    assert torch.equal(converted["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda sd: sd.update({"_blocks.0._squeeze.weight": torch.zeros(1)}),
            r"unmapped source keys \['_blocks\.0\._squeeze",
        ),
        (lambda sd: sd.pop("_bn1.bias"), r"target keys with no source \['bn2\.bias'\]"),
        (lambda sd: sd.update({"_fc.weight": torch.zeros(10, 1280)}), r"shape mismatches \['classifier\.weight"),
    ],
)
def test_conversion_fails_loudly_on_a_wrong_key_or_shape(mutate, message):
    source = torch.load(lite0_package_file(), map_location="cpu", weights_only=True)
    mutate(source)
    with pytest.raises(WeightsError, match=message):
        convert_lite0(source, build_model("tf_efficientnet_lite0", 1000).state_dict())


def _imagenet_top5(model: torch.nn.Module, image: np.ndarray, mean: float = 0.5, std: float = 0.5) -> list[int]:
    img = Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).sub(mean).div(std)
    with torch.inference_mode():
        return model(x[None]).topk(5).indices[0].tolist()


def test_converted_model_recognises_real_photos(lite0_imagenet):
    from sklearn.datasets import load_sample_image

    # scikit-learn ships two photos: a daisy and a Chinese temple.
    assert _imagenet_top5(lite0_imagenet, load_sample_image("flower.jpg"))[0] == 985  # daisy
    buildings = {442, 449, 483, 497, 663, 698, 832}  # bell cote, boathouse, castle, church, monastery, palace, stupa
    assert set(_imagenet_top5(lite0_imagenet, load_sample_image("china.jpg"))) & buildings


def test_a_random_model_does_not_recognise_the_daisy():
    torch.manual_seed(0)
    from sklearn.datasets import load_sample_image

    assert _imagenet_top5(build_model("tf_efficientnet_lite0", 1000).eval(), load_sample_image("flower.jpg"))[0] != 985


def test_transfer_keeps_a_fresh_head_when_the_class_count_differs():
    model = build_model("tf_efficientnet_lite0", 2)
    state = load_pretrained("tf_efficientnet_lite0", LITE0_PACKAGE).state
    reset = transfer_weights(model, state)
    assert reset == ["classifier.weight", "classifier.bias"]
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_package_weights_refuse_another_arch():
    with pytest.raises(WeightsError, match="only fits model.arch tf_efficientnet_lite0, not resnet18"):
        load_pretrained("resnet18", LITE0_PACKAGE)


def test_torchvision_weights_load_offline_from_a_seeded_hub_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    seeded = build_model("resnet18", 1000).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(seeded, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")  # the name torchvision looks for
    state = load_pretrained("resnet18", "IMAGENET1K_V1").state
    assert state.keys() == seeded.keys()
    assert torch.equal(state["layer4.1.conv2.weight"], seeded["layer4.1.conv2.weight"])
    model = build_model("resnet18", 3)
    assert transfer_weights(model, state) == ["fc.weight", "fc.bias"]


def test_torchvision_weights_offline_and_not_cached_say_how_to_fix_it(tmp_path: Path, monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match=r"not in the torch hub cache .*resnet18-f37072fd\.pth.*Fix: run once"):
        load_pretrained("resnet18", "IMAGENET1K_V1")


def test_weights_names_must_fit_the_arch():
    with pytest.raises(WeightsError, match="IMAGENET1K_V2 does not fit resnet18"):
        load_pretrained("resnet18", "IMAGENET1K_V2")


def test_local_files_load_as_safetensors_or_weights_only_pickles(tmp_path: Path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(4.0)}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], state["w"])
    assert torch.equal(load_file(tmp_path / "w.pt")["w"], state["w"])
    with pytest.raises(WeightsError, match=r"nope\.pt: no such file"):
        load_file(tmp_path / "nope.pt")
    (tmp_path / "w.onnx").write_text("")
    with pytest.raises(WeightsError, match="unsupported file type"):
        load_file(tmp_path / "w.onnx")


def test_a_malicious_pickle_is_refused_without_running_its_code(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"w": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil\.pth: refused or unreadable with weights_only=True"):
        load_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_weights_that_do_not_fit_the_model_are_refused():
    model = build_model("tf_efficientnet_lite0", 2)
    with pytest.raises(WeightsError, match=r"do not fit EfficientNet: \d+ missing"):
        transfer_weights(model, build_model("resnet18", 2).state_dict())
