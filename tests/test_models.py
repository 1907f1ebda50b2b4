"""The model zoo: every family classifies gray and RGB images of the competition's size, local
weights files load exactly or fail with a clear error, and transfer learning trains only the
head while frozen, keeps BatchNorm statistics when asked, and gives earlier layers lower rates."""
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from compete.config import Member
from compete.errors import PipelineError
from compete.finetune import freeze_batchnorm, head_parameters, parameter_groups, set_backbone_trainable
from compete.config import parse_sets
from compete.models import NetSpec, build_model

REPO = Path(__file__).resolve().parents[1]
MOBILENET_FILE = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet_fp16.pth"
CLASSES = 5
TINY_CNN = {"model_args": {"widths": [8, 16], "convs": 1}}

FAMILIES = [  # (model, qualified name of its new head, member settings that fit 28 and 32 px)
    ("cnn", "head", TINY_CNN),
    ("resnet_small", "head", {"model_args": {"widths": [8, 16, 32]}}),
    ("resnet18", "fc", {}),  # a bare name both libraries know is torchvision's
    ("mobilenet_v2", "classifier.1", {}),
    ("efficientnet_b0", "classifier.1", {}),
    ("convnext_tiny", "classifier.2", {"image_size": 32}),  # 28 px would shrink to nothing
    ("vgg16_bn", "classifier.6", {"image_size": 32, "head_hidden": 16}),
    ("timm/resnet18", "fc", {}),
    ("timm/efficientnet_b0", "classifier", {}),
    ("convnext_atto", "head.fc", {"image_size": 32}),  # timm only
    ("mobilenetv3_small_050", "classifier", {"model_args": {"gray_stem": "sum"}}),
    ("vit_tiny_patch16_224", "head", {"image_size": 32, "model_args": {"img_size": 32, "patch_size": 8}}),
]
SIZES = [(1, 28), (3, 32)]  # (channels, side): Fashion-MNIST-like and CIFAR-like competitions


def build(model: str, channels: int = 3, size: int = 32, **settings):
    member = Member(model=model, **settings)
    return build_model(member, NetSpec(channels, size, CLASSES, [0.5] * channels, [0.25] * channels))


def last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.slow  # builds and trains every library family, convnext and vgg included
@pytest.mark.parametrize("channels,size", SIZES)
@pytest.mark.parametrize("model,head,settings", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_trains_and_predicts_on_the_competitions_images(model, head, settings, channels, size):
    net = build(model, channels, size, **settings)
    images = torch.rand(2, channels, size, size).contiguous(memory_format=torch.channels_last)
    net.train()
    F.cross_entropy(net(images), torch.tensor([0, 4])).backward()
    assert net.head_name == head and last_linear(net.net.get_submodule(head)).out_features == CLASSES
    assert all(p.grad is not None and p.grad.isfinite().all() for p in head_parameters(net))
    with torch.no_grad():
        logits = net.eval()(images)
    assert logits.shape == (2, CLASSES) and logits.isfinite().all()


def test_head_hidden_makes_the_classic_two_layer_head():
    head = build("mobilenet_v2", head_hidden=64, model_args={"dropout": 0.3}).net.classifier[1]
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].p, head[3].out_features) == (1280, 64, 0.3, CLASSES)


def test_a_prefix_picks_the_library_when_names_collide():
    assert type(build("resnet18").net) is torchvision.models.ResNet
    assert type(build("tv/resnet18").net) is torchvision.models.ResNet
    assert type(build("timm/resnet18").net).__module__.startswith("timm.")


def test_summing_the_stem_weights_equals_repeating_the_gray_channel():
    images = torch.rand(2, 1, 28, 28)
    torch.manual_seed(0)
    repeat = build("resnet18", channels=1, size=28).eval()
    torch.manual_seed(0)
    summed = build("resnet18", channels=1, size=28, model_args={"gray_stem": "sum"}).eval()
    assert summed.net.conv1.in_channels == 1 and summed.net_channels == 1
    with torch.no_grad():
        torch.testing.assert_close(summed(images), repeat(images), rtol=1e-4, atol=1e-5)


def test_small_images_are_resized_to_the_members_size():
    seen = []
    net = build("mobilenet_v2", channels=1, size=28, image_size=64)
    net.net.features[0].register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    net.eval()(torch.rand(2, 1, 28, 28))
    assert seen == [(2, 3, 64, 64)]


def test_normalization_follows_the_member():
    assert build("resnet18", normalize="imagenet").mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert build("resnet18", channels=1, normalize="imagenet").std.flatten().tolist() == pytest.approx([0.226])
    assert build("cnn", channels=1, **TINY_CNN).mean.flatten().tolist() == [0.5]  # the data's
    vit = build("vit_tiny_patch16_224", normalize="pretrained", image_size=32,
                model_args={"img_size": 32, "patch_size": 8})
    assert vit.mean.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])  # what its weights expect
    with pytest.raises(PipelineError, match="normalize: 'imagenett' is not one of data, imagenet, pretrained"):
        parse_sets(["normalize=imagenett"])  # refused when the settings load, before any model


@pytest.mark.parametrize("settings,message", [
    ({"model": "resnet1800"}, "Unknown model 'resnet1800'"),
    ({"model": "timm/mobilenet_v2"}, "Unknown model"),  # torchvision's name, not timm's
    ({"model": "resnet18", "model_args": {"depth": 3}}, "model_args \\['depth'\\] do not fit 'resnet18'"),
    ({"model": "cnn", "model_args": {"depth": 3}}, "do not fit 'cnn'"),
    ({"model": "cnn", "pretrained": True}, "no library pretrained weights"),
    ({"model": "resnet18", "model_args": {"gray_stem": "mean"}}, "gray_stem"),
])
def test_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(PipelineError, match=message):
        build(channels=1, size=28, **settings)


# ---- weights files -------------------------------------------------------------------------

def outside_head(model) -> dict:
    head = model.head_name + "."
    return {k: v for k, v in model.net.state_dict().items() if not k.startswith(head)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("model", ["mobilenet_v2", "cnn"])
def test_a_weights_file_round_trips(tmp_path, model, dtype):
    source = build(model, **(TINY_CNN if model == "cnn" else {}))
    path = tmp_path / "private.pth"
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in source.net.state_dict().items()}, path)
    loaded = build(model, weights=str(path), **(TINY_CNN if model == "cnn" else {}))
    expected = outside_head(source)
    for key, value in outside_head(loaded).items():
        want = expected[key].to(dtype).to(value.dtype) if value.is_floating_point() else expected[key]
        assert value.dtype == expected[key].dtype and torch.equal(value, want), key


def test_a_wrapped_dataparallel_checkpoint_loads(tmp_path):
    source = build("cnn", **TINY_CNN)
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.net.state_dict().items()}}, path)
    loaded = build("cnn", weights=str(path), **TINY_CNN)
    assert torch.equal(loaded.net.features[0][0].weight, source.net.features[0][0].weight)


def test_a_missing_weights_file_names_the_file(tmp_path):
    with pytest.raises(PipelineError, match=f"nope.pth not found in {tmp_path}: put it there"):
        build("mobilenet_v2", weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("wrong_source,message", [
    (lambda: torchvision.models.resnet18(), "missing"),  # another architecture
    (lambda: torchvision.models.mobilenet_v2(width_mult=0.5), "of the wrong shape"),  # another width
])
def test_a_weights_file_of_another_model_is_an_error_not_a_random_init(tmp_path, wrong_source, message):
    path = tmp_path / "other.pth"
    torch.save(wrong_source().state_dict(), path)
    with pytest.raises(PipelineError, match=f"Weights file {path} does not fit .*{message}"):
        build("mobilenet_v2", weights=str(path))


def test_a_file_that_is_not_a_state_dict_is_an_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not weights")
    with pytest.raises(PipelineError, match=f"{path} is not a readable state_dict"):
        build("mobilenet_v2", weights=str(path))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network and empty weight caches, as on the competition machines."""
    def refuse(*args, **kwargs):
        raise socket.gaierror("offline (test)")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("model,where", [
    ("resnet18", "Looked for {tmp}/torch/hub/checkpoints/resnet18-f37072fd.pth."),
    ("timm/convnext_atto", "model.safetensors (or pytorch_model.bin) in "
                           "{tmp}/hf/models--timm--convnext_atto.d2_in1k/snapshots")])
def test_pretrained_weights_that_cannot_be_fetched_name_the_file_and_folder(offline, tmp_path, model, where):
    with pytest.raises(PipelineError) as error:
        build(model, pretrained=True)
    message = str(error.value)
    assert f"Cannot load the pretrained weights of '{model}'" in message
    assert where.format(tmp=tmp_path) in message and "weights: FILE" in message


def test_torchvision_pretrained_weights_load_from_its_cache_offline(offline, tmp_path):
    source = torchvision.models.mobilenet_v2()  # stands in for the real download
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / "mobilenet_v2-7ebf99e0.pth")
    loaded = build("tv/mobilenet_v2", pretrained=True)
    assert torch.equal(loaded.net.features[0][0].weight, source.features[0][0].weight)


@pytest.mark.parametrize("hub_offline", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
def test_timm_pretrained_weights_load_from_the_hugging_face_cache_offline(offline, tmp_path, monkeypatch,
                                                                         hub_offline):
    import safetensors.torch
    import timm
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", hub_offline)
    source = timm.create_model("convnext_atto")
    repo = tmp_path / "hf" / "models--timm--convnext_atto.d2_in1k"
    revision = "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()},
                                repo / "snapshots" / revision / "model.safetensors")
    loaded = build("timm/convnext_atto", pretrained=True)
    assert torch.equal(loaded.net.stem[0].weight, source.stem[0].weight)


def test_a_weights_file_stands_in_for_the_download(offline, tmp_path):
    source = torchvision.models.mobilenet_v2()
    torch.save(source.state_dict(), tmp_path / "mobilenet.pth")
    loaded = build("mobilenet_v2", pretrained=True, weights=str(tmp_path / "mobilenet.pth"))
    assert torch.equal(loaded.net.features[0][0].weight, source.features[0][0].weight)


@pytest.mark.skipif(not MOBILENET_FILE.is_file(), reason=f"{MOBILENET_FILE} not present")
def test_the_real_pretrained_mobilenet_loads_and_feeds_gray_images():
    state = torch.load(MOBILENET_FILE, weights_only=True)
    torch.manual_seed(0)
    repeat = build("mobilenet_v2", 1, 28, weights=str(MOBILENET_FILE), normalize="imagenet").eval()
    torch.manual_seed(0)
    summed = build("mobilenet_v2", 1, 28, weights=str(MOBILENET_FILE), normalize="imagenet",
                   model_args={"gray_stem": "sum"}).eval()
    for key, value in outside_head(repeat).items():
        assert torch.equal(value, state[key].to(value.dtype)), key
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(summed(images), repeat(images), rtol=1e-4, atol=1e-4)
    with pytest.raises(PipelineError, match="does not fit ResNet"):
        build("resnet18", weights=str(MOBILENET_FILE))


# ---- transfer learning ---------------------------------------------------------------------

def step(model, optimizer, channels: int = 1, size: int = 28) -> None:
    model.train()
    loss = F.cross_entropy(model(torch.rand(2, channels, size, size)), torch.tensor([0, 1]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("model,settings", [("cnn", TINY_CNN), ("mobilenet_v2", {"head_hidden": 8})])
def test_a_frozen_backbone_stays_put_while_the_head_learns(model, settings):
    net = build(model, 1, 28, **settings)
    optimizer = torch.optim.AdamW(parameter_groups(net, 0.01, 0.5, 3), weight_decay=0.1)
    head = {id(p) for p in head_parameters(net)}
    before = {name: p.detach().clone() for name, p in net.net.named_parameters()}
    set_backbone_trainable(net, False)
    step(net, optimizer)
    for name, param in net.net.named_parameters():
        assert torch.equal(param, before[name]) != (id(param) in head), name
    stem = next(iter(before))  # the first parameter registered: the stem's
    set_backbone_trainable(net, True)
    step(net, optimizer)
    assert not torch.equal(net.net.get_parameter(stem), before[stem])


def test_frozen_batchnorm_keeps_its_running_statistics():
    net = build("resnet18", 1, 28)
    bn = net.net.bn1
    net.train()
    freeze_batchnorm(net.net)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    net(torch.rand(2, 1, 28, 28))
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    net.train()  # a new epoch: without freezing, the statistics move
    net(torch.rand(2, 1, 28, 28))
    assert not torch.equal(bn.running_mean, mean)


@pytest.mark.parametrize("model,settings", [(m, s) for m, _, s in FAMILIES if m not in ("vgg16_bn", "timm/efficientnet_b0")])
def test_earlier_layers_get_lower_learning_rates(model, settings):
    net = build(model, **settings)
    groups = parameter_groups(net, lr=1.0, decay=0.5, groups=3)
    assert [g["lr"] for g in groups] == [0.125, 0.25, 0.5, 1.0]
    assert [id(p) for p in groups[-1]["params"]] == [id(p) for p in head_parameters(net)]
    order = {id(p): i for i, p in enumerate(net.net.parameters())}
    positions = [sorted(order[id(p)] for p in g["params"]) for g in groups[:-1]]
    assert sorted(sum(positions, []) + [order[id(p)] for p in groups[-1]["params"]]) == list(range(len(order)))
    assert all(a[-1] < b[0] for a, b in zip(positions, positions[1:]))  # consecutive, in depth order


def test_resnet18_groups_keep_blocks_whole_stem_lowest():
    net = build("resnet18")
    groups = parameter_groups(net, lr=1.0, decay=0.1, groups=3)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    rate = {name: lr_of[id(p)] for name, p in net.net.named_parameters()}
    assert rate["conv1.weight"] == min(rate.values()) and rate["layer4.1.conv2.weight"] == pytest.approx(0.1)
    assert rate["layer2.1.conv1.weight"] == rate["layer2.1.bn2.bias"]
    assert parameter_groups(net, lr=1.0, decay=1.0, groups=3)[0]["params"] == list(net.net.parameters())


@pytest.mark.parametrize("kind, library", [("avg", nn.AdaptiveAvgPool2d(1)), ("max", nn.AdaptiveMaxPool2d(1))])
def test_global_pooling_computes_what_the_adaptive_pools_do(kind, library):
    from compete.models import GlobalPool
    x = torch.randn(4, 5, 7, 7, requires_grad=True)
    ours = GlobalPool(kind)(x)
    assert torch.allclose(ours, library(x), atol=1e-6)
    ours.sum().backward()  # each map's gradient sums to 1: the mean spreads it, the max picks one
    assert torch.allclose(x.grad.sum((2, 3)), torch.ones(4, 5))
