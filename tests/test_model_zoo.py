"""The model zoo: every model name the project documents (its own models, and the torchvision
and timm names its presets and README use, plus a small timm set) builds, runs forward without
NaN, and comes back from its checkpoint with the same outputs."""
import pytest
import torch

from compete.config import Member
from compete.model_names import OWN_MODEL_NAMES
from compete.models import NetSpec, member_model
from compete.runs import RUN_FORMAT, load_checkpoint, read_checkpoint, save_checkpoint

# (model, model_args): tiny widths where the model takes them; library models as they come
LIBRARY_MODELS = [
    ("mobilenet_v2", {}),                      # presets: bees default, finetune, ensemble; cifar10 transfer
    ("mobilenet_v2", {"gray_stem": "sum"}),    # a gray competition into an RGB stem, summed
    ("tv/resnet18", {}),                       # presets: bees ensemble
    ("timm/resnet18", {"dropout": 0.1}),
    ("timm/mobilenetv3_small_050", {}),
]
OWN_MODELS = [("cnn", {"widths": [8, 16], "convs": 1}), ("cnn", {"widths": [8], "pool": "flatten"}),
              ("resnet_small", {"widths": [8, 16, 32]})]


def round_trip(tmp_path, model_name: str, model_args: dict, channels: int, size: int):
    member = Member(model=model_name, model_args=model_args, normalize="imagenet" if channels == 3 else "data")
    spec = NetSpec(channels, size, 5, [0.5] * channels, [0.25] * channels)
    model = member_model(member, spec, torch.device("cpu"), seed=0).eval()
    images = torch.rand(2, channels, size, size)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    path = tmp_path / "members" / "m0_f0.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(path, model.state_dict(), member, spec, {"epoch": 1})
    assert read_checkpoint(path)["format"] == RUN_FORMAT
    loaded, saved_member = load_checkpoint(path, torch.device("cpu"))
    assert saved_member == member and not loaded.training
    saved = model.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items())
    with torch.no_grad():  # the same numbers up to the memory layout's order of summation
        torch.testing.assert_close(loaded(images), logits, rtol=1e-5, atol=1e-6)


def test_every_own_model_name_is_tested():
    assert {name for name, _ in OWN_MODELS} == set(OWN_MODEL_NAMES)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("model_name, model_args", OWN_MODELS)
def test_own_models_build_run_and_round_trip_through_a_checkpoint(tmp_path, model_name, model_args, channels):
    round_trip(tmp_path, model_name, model_args, channels, size=16)


@pytest.mark.slow  # library models of millions of weights: about a second each
@pytest.mark.parametrize("model_name, model_args", LIBRARY_MODELS)
def test_library_models_build_run_and_round_trip_through_a_checkpoint(tmp_path, model_name, model_args):
    channels = 1 if model_args.get("gray_stem") else 3
    round_trip(tmp_path, model_name, model_args, channels, size=32)
