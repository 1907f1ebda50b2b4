"""Models by name: the small BatchNorm CNN, a ResNet-style net for small images, and any
torchvision or timm classifier, each wrapped so that it takes [0, 1] images of the
competition's shape and carries its own normalization and input size; what they are built for
(NetSpec), and a member's seeded model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import Competition, Member, weights_dir
from .errors import PipelineError
from .imagestore import ImageFile, channel_stats
from .metadata import MetadataEncoder, fitted
from .model_names import OWN_MODEL_NAMES, model_library
from .modelfiles import read_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_DROPOUT = 0.2               # dropout before a new head's last Linear (model_args: dropout)
# model_args go to the model's constructor (own class, torchvision builder, timm.create_model),
# except two read here: dropout (a library model's new head; own models take it themselves) and
# gray_stem, how 1-channel images meet a 3-channel stem: "repeat" the gray channel, or "sum" the
# first conv's weights over its input channels
GRAY_STEMS = ("repeat", "sum")
OFFLINE_HINTS = {  # how to point each library at a cache that holds the file
    "torchvision": "TORCH_HOME names the folder above hub/checkpoints",
    "timm": "HF_HOME names the Hugging Face cache; HF_HUB_OFFLINE=1 skips the network"}


class ConvBN(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True))


class GlobalPool(nn.Module):
    """Global average or max pooling to (N, C, 1, 1). Plain reductions rather than
    AdaptiveAvgPool2d / AdaptiveMaxPool2d: their CUDA backward passes have no deterministic
    implementation, these do (and they compute the same thing)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        return x.mean((2, 3), keepdim=True) if self.kind == "avg" else x.amax((2, 3), keepdim=True)


class SmallCNN(nn.Module):
    """The tutorial's Conv-BN-ReLU-MaxPool family, widened: blocks of `convs` ConvBN layers,
    each block ending in 2x2 max-pooling, then global average pooling and one Linear layer."""

    def __init__(self, in_channels: int, num_classes: int, widths=(32, 64, 128), convs: int = 2,
                 dropout: float = 0.1, pool: str = "avg", image_size: int = 28):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            for _ in range(convs):
                layers.append(ConvBN(channels, width))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        # "avg": global average pooling; "flatten": keep the last map's layout (small images,
        # where where-it-is matters, as in the tutorial model)
        side = image_size // 2 ** len(widths)
        pooled = [GlobalPool("avg")] if pool == "avg" else []
        features = channels if pool == "avg" else channels * side * side
        self.head = nn.Sequential(*pooled, nn.Flatten(), nn.Dropout(dropout), nn.Linear(features, num_classes))

    def forward(self, images):
        return self.head(self.features(images))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvBN(channels, channels), ConvBN(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class ResNetSmall(nn.Module):
    """ResNet-9 style net for small images (the CIFAR speed-run family): a stem, then per stage a
    ConvBN with max-pooling, and a residual block on the first and last stages."""

    def __init__(self, in_channels: int, num_classes: int, widths=(64, 128, 256), dropout: float = 0.0,
                 scale: float = 0.125):
        super().__init__()
        stages, channels = [ConvBN(in_channels, widths[0] // 2)], widths[0] // 2
        for i, width in enumerate(widths):
            stages += [ConvBN(channels, width), nn.MaxPool2d(2)]
            if i in (0, len(widths) - 1):
                stages.append(Residual(width))
            channels = width
        self.features = nn.Sequential(*stages)
        self.scale = scale  # logits scaled down, as in the speed runs, for calmer early training
        self.head = nn.Sequential(
            GlobalPool("max"), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, images):
        return self.head(self.features(images)) * self.scale


OWN_MODELS = dict(zip(OWN_MODEL_NAMES, (SmallCNN, ResNetSmall)))


class MetadataFusion(nn.Module):
    """The classifier of a model that reads metadata: the image features beside an MLP of the
    encoded metadata (metadata.py), concatenated, then a hidden layer, so that the label may
    depend on the two together (a coat suits a cold day, not a hot one: no sum of an image term
    and a metadata term says that), then the outputs."""

    def __init__(self, image_features: int, encoder: dict, hidden: int, num_classes: int):
        super().__init__()
        self.encoder = encoder  # metadata.MetadataEncoder as saved: what the inputs are
        metadata_features = MetadataEncoder.from_dict(encoder).features
        self.metadata = nn.Sequential(nn.Linear(metadata_features, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.classifier = nn.Sequential(nn.Linear(image_features + hidden, hidden), nn.GELU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, features, metadata):
        return self.classifier(torch.cat([features, self.metadata(metadata).to(features.dtype)], 1))


class Classifier(nn.Module):
    """A network plus its input adaptation: normalize, resize, match the stem's channels; and,
    for a competition with metadata, the fusion head (None: the net's own head classifies),
    which holds the encoder of its metadata (predict encodes the test rows with it)."""

    def __init__(self, net: nn.Module, head_name: str, mean, std, image_size: int | None,
                 net_channels: int):
        super().__init__()
        self.net = net
        self.head_name = head_name  # qualified name of the (new) classification head in `net`
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.image_size = image_size
        self.net_channels = net_channels
        self.fusion: MetadataFusion | None = None  # set by build_model for a competition with metadata

    @property
    def metadata(self) -> dict | None:
        """The encoder of the metadata the model reads (as saved), or None."""
        return None if self.fusion is None else self.fusion.encoder

    def forward(self, images, metadata=None):
        """images: float (N, C, H, W) in [0, 1]; metadata: the encoded (N, features) rows, for a
        model with a fusion head."""
        images = (images - self.mean) / self.std
        if self.image_size and images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False, antialias=False)
        if images.shape[1] != self.net_channels:
            images = images.expand(-1, self.net_channels, -1, -1)  # grayscale into an RGB stem
        if self.fusion is None:
            return self.net(images)
        return self.fusion(self.net(images), metadata)


def _library_model(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """A torchvision or timm model by name, with the library's own pretrained weights and cache."""
    library, arch = model_library(name)
    try:
        if library == "torchvision":
            import torchvision
            return torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None, **kwargs)
        import timm
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except TypeError as error:  # a keyword the constructor does not take
        raise PipelineError(f"model_args {sorted(kwargs)} do not fit '{name}' ({error}).") from None
    except Exception as error:  # download refused offline, missing cache, unknown weight tag, ...
        if not pretrained:
            raise
        raise PipelineError(
            f"Cannot load the pretrained weights of '{name}' ({type(error).__name__}: {error}). "
            f"Looked for {pretrained_file(library, arch)}. Offline, put the file there "
            f"({OFFLINE_HINTS[library]}), or set weights: FILE to a state_dict in the weights folder "
            f"({weights_dir()}).") from None


def pretrained_file(library: str, arch: str) -> str:
    """Where the library's cache keeps the default pretrained weights of `arch`: the file a
    download would write, which an offline load reads instead."""
    import torch.hub
    if library == "torchvision":
        return str(torchvision_cache_file(arch))
    import huggingface_hub.constants
    from timm.models import get_pretrained_cfg
    config = get_pretrained_cfg(arch)
    if config is not None and config.hf_hub_id:
        repo_id = config.hf_hub_id.split("@")[0]
        repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
        return f"model.safetensors (or pytorch_model.bin) in {repo / 'snapshots' / '<revision>'}"
    url = config.url if config is not None else ""
    return f"{Path(url).name or arch} in {Path(torch.hub.get_dir()) / 'checkpoints'}"


def torchvision_cache_file(arch: str) -> Path:
    """The file torchvision's default pretrained weights of `arch` are downloaded to and read from:
    $TORCH_HOME/hub/checkpoints/<the release's file name>."""
    import torch.hub
    import torchvision
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _unwrap_state(state) -> dict:
    """The state_dict inside a file: bare, or wrapped by a training checkpoint ("state_dict" or
    "model" key), keys prefixed by DataParallel or not."""
    while isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
        state = state.get("state_dict", state.get("model"))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("no dict of tensors in it")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_backbone_weights(net: nn.Module, path: str, head_name: str) -> None:
    """Load a local state_dict into everything but the classifier `head_name` (always new).
    fp16 files are cast; any other mismatch is an error, never a silent random init."""
    if not Path(path).is_file():
        raise PipelineError(f"Weights file {Path(path).name} not found in {Path(path).parent}: put it "
                            f"there (the weights folder is $COMPETE_WEIGHTS, else weights/ in the "
                            f"workspace), or fix 'weights:' in the competition yaml.")
    try:
        state = _unwrap_state(read_weights(path))  # an unreadable file: refused in one line there
    except ValueError as error:
        raise PipelineError(
            f"Weights file {path} is not a readable state_dict ({error}). Save its state_dict where "
            f"you trust it (torch.save(model.state_dict(), FILE)), or use another file.") from None

    def outside_head(key: str) -> bool:
        return key != head_name and not key.startswith(head_name + ".")
    own = {k: v for k, v in net.state_dict().items() if outside_head(k)}
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v
             for k, v in state.items() if outside_head(k)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise PipelineError(
            f"Weights file {path} does not fit {type(net).__name__}: {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of the wrong "
            f"shape {wrong[:3]}. Check that it is a state_dict of this model with these model_args.")
    net.load_state_dict(state, strict=False)  # the head's keys are the only ones left out


def _classifier_name(net: nn.Module) -> str:
    """Qualified name of the final Linear: timm's config names it; otherwise (torchvision) it
    is the last Linear registered."""
    named = getattr(net, "pretrained_cfg", {}).get("classifier")
    if isinstance(named, str) and isinstance(net.get_submodule(named), nn.Linear):
        return named
    linears = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise PipelineError(f"Cannot find the Linear classifier of {type(net).__name__} to replace: "
                            f"choose another model.")
    return linears[-1]


def replace_head(net: nn.Module, num_classes: int, hidden: int, dropout: float) -> str:
    """Swap the final Linear for a new head (hidden > 0: Linear-ReLU-Dropout-Linear, the classic
    VGG recipe); returns the head's qualified name."""
    name = _classifier_name(net)
    features = net.get_submodule(name).in_features
    if hidden:
        head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True),
                             nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    else:
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
    net.set_submodule(name, head)
    return name


def _first_conv(net: nn.Module) -> nn.Conv2d | None:
    first = getattr(net, "pretrained_cfg", {}).get("first_conv")  # timm names it
    conv = net.get_submodule(first) if isinstance(first, str) else \
        next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return conv if isinstance(conv, nn.Conv2d) else None


def sum_gray_stem(net: nn.Module) -> None:
    """Let 1-channel images into a 3-channel stem by summing the first conv's weights over its
    input channels: the same output as repeating the gray channel, for a third of the stem's work."""
    conv = _first_conv(net)
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise PipelineError(f"gray_stem: sum needs a first Conv2d with 3 input channels, which "
                            f"{type(net).__name__} lacks: use gray_stem: repeat.")
    conv.weight = nn.Parameter(conv.weight.detach().sum(1, keepdim=True))
    conv.in_channels = 1


def adapt_stem(net: nn.Module, channels: int) -> None:
    """Let `channels`-band images into a pretrained RGB stem as timm does (adapt_input_conv):
    the RGB weights repeated over the bands and scaled by 3 / channels, so that (for a multiple
    of three) bands holding copies of an RGB image meet the stem as that image would."""
    from timm.models import adapt_input_conv
    conv = _first_conv(net)
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise PipelineError(f"channels: {channels} needs a model whose first layer is a Conv2d with 3 input "
                            f"channels to adapt; {type(net).__name__} lacks one: choose another model.")
    conv.weight = nn.Parameter(adapt_input_conv(channels, conv.weight.detach()))
    conv.in_channels = channels


def _normalization(member: Member, net: nn.Module, in_channels: int, data_mean, data_std):
    """Mean and std per input channel. "data": the training set's; "imagenet": ImageNet's;
    "pretrained": what the weights were trained with (timm's config; ImageNet for torchvision).
    Gray images get the averages over RGB."""
    if member.normalize == "data":
        return data_mean, data_std
    config = getattr(net, "pretrained_cfg", {}) if member.normalize == "pretrained" else {}
    mean, std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    if in_channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    # more bands: the RGB statistics repeated, band b taking channel b % 3's as adapt_stem's weights do
    return tuple(mean[b % 3] for b in range(in_channels)), tuple(std[b % 3] for b in range(in_channels))


def _own_model(member: Member, in_channels: int, num_classes: int, image_size: int, args: dict):
    if member.pretrained:
        raise PipelineError(f"'{member.model}' has no library pretrained weights: set pretrained: "
                            f"false, or weights: FILE (a state_dict of it in the weights folder).")
    if member.model == "cnn":
        args.setdefault("image_size", member.image_size or image_size)
    try:
        return OWN_MODELS[member.model](in_channels, num_classes, **args)
    except TypeError as error:
        raise PipelineError(f"model_args {sorted(args)} do not fit '{member.model}' ({error}).") from None


def build_model(member: Member, spec: "NetSpec", load_weights: bool = True) -> Classifier:
    """The member's network, built for `spec`. `load_weights=False` when a checkpoint follows.
    A weights: file takes the place of the library's pretrained download."""
    in_channels, num_classes, image_size = spec.channels, spec.num_classes, spec.image_size
    args = {k: v for k, v in member.model_args.items() if k != "gray_stem"}
    gray_stem = member.model_args.get("gray_stem", "repeat")
    if gray_stem not in GRAY_STEMS:
        raise PipelineError(f"model_args gray_stem: {gray_stem} is not one of {', '.join(GRAY_STEMS)}.")
    if member.model in OWN_MODELS:
        net = _own_model(member, in_channels, num_classes, image_size, args)
        head_name, net_channels = "head", in_channels
        if member.weights and load_weights:
            load_backbone_weights(net, member.weights, head_name)
    else:
        dropout = args.pop("dropout", HEAD_DROPOUT)
        net = _library_model(member.model, member.pretrained and load_weights and not member.weights, args)
        if member.weights and load_weights:
            load_backbone_weights(net, member.weights, _classifier_name(net))
        head_name = replace_head(net, num_classes, member.head_hidden, dropout)
        if in_channels == 1 and gray_stem == "sum":
            sum_gray_stem(net)
        elif in_channels not in (1, 3):
            adapt_stem(net, in_channels)
        stem = _first_conv(net)
        net_channels = stem.in_channels if stem is not None else 3
    mean, std = _normalization(member, net, in_channels, spec.mean, spec.std)
    size = member.image_size if member.image_size and member.image_size != image_size else None
    model = Classifier(net, head_name, mean, std, size, net_channels)
    if spec.metadata is not None:
        model.fusion = _fusion(net, head_name, spec, member.metadata_hidden)
    return model


def _fusion(net: nn.Module, head_name: str, spec: "NetSpec", hidden: int) -> MetadataFusion:
    """The fusion head of a model that reads metadata: the last Linear of the net's head gives
    way to an Identity (the net then outputs its image features, which MetadataFusion reads
    beside the metadata)."""
    head = net.get_submodule(head_name)
    last = [name for name, module in head.named_modules() if isinstance(module, nn.Linear)][-1]
    name = f"{head_name}.{last}" if last else head_name
    features = net.get_submodule(name).in_features
    net.set_submodule(name, nn.Identity())
    return MetadataFusion(features, spec.metadata, hidden, spec.num_classes)


@dataclass
class NetSpec:
    """What every member's network of a run is built for: its input images, its outputs and the
    normalization statistics of the training images. Saved as the dict `shape` in config.json
    and in every checkpoint."""
    channels: int                    # 1 = gray, 3 = RGB, more: bands (scans.MAX_CHANNELS at most)
    image_size: int                  # side of the competition's images in pixels
    num_classes: int                 # model outputs: the target kind's classes, tags or one
    mean: list[float] | None         # per-channel mean of the training images, [0, 1] scale;
                                     # None when no member normalizes with the data's statistics
    std: list[float] | None          # per-channel standard deviation, same scale
    metadata: dict | None = None     # the metadata encoder fitted on the training rows
                                     # (metadata.MetadataEncoder.to_dict); None: images only


def net_spec(comp: Competition, images: ImageFile, outputs: int, train_idx=None,
             members: list[Member] | None = None, rows=None) -> NetSpec:
    """What every member is built for: the competition's channels and size, `outputs` (the
    target kind's) and the statistics of the training images in rows `train_idx` (all when
    None): the first split's training part, so a hold-out never counts (with k folds, fold 1's
    training part stands for every fold's). The statistics are measured only when a member
    (any, when `members` is None) normalizes with them. The metadata encoder is fitted on the
    same rows of `rows` (the training images' metadata; None: there is none)."""
    mean, std = None, None
    if members is None or any(member.normalize == "data" for member in members):
        mean, std = channel_stats(images, train_idx)
    return NetSpec(comp.channels, comp.image_size, outputs, mean, std, fitted(rows, train_idx))


def member_seed(fold_seed: int, m: int) -> int:
    """The seed of member m's initial weights on a fold seeded `fold_seed`: members apart."""
    return fold_seed + 1000 * m


def member_model(member: Member, spec: NetSpec, device: torch.device, seed: int):
    """A freshly initialised member network (seeded), on `device` in channels_last layout."""
    torch.manual_seed(seed)
    model = build_model(member, spec)
    return model.to(device, memory_format=torch.channels_last)
