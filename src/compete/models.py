"""Models by name: the small BatchNorm CNN, a ResNet-style net for small images, and any
torchvision or timm classifier, each wrapped so that it takes [0, 1] images of the
competition's shape and carries its own normalization and input size.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import Member, PipelineError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBN(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True))


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
        pooled = [nn.AdaptiveAvgPool2d(1)] if pool == "avg" else []
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
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, images):
        return self.head(self.features(images)) * self.scale


OWN_MODELS = {"cnn": SmallCNN, "resnet_small": ResNetSmall}


class Classifier(nn.Module):
    """A network plus its input adaptation: normalize, resize, match the stem's channels."""

    def __init__(self, net: nn.Module, head_name: str, mean, std, image_size: int | None,
                 net_channels: int):
        super().__init__()
        self.net = net
        self.head_name = head_name  # qualified name of the (new) classification head in `net`
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.image_size = image_size
        self.net_channels = net_channels

    def forward(self, images):
        """images: float (N, C, H, W) in [0, 1]."""
        images = (images - self.mean) / self.std
        if self.image_size and images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False, antialias=False)
        if images.shape[1] != self.net_channels:
            images = images.expand(-1, self.net_channels, -1, -1)  # grayscale into an RGB stem
        return self.net(images)


def _library_model(name: str, pretrained: bool):
    """A torchvision or timm model by name, with the library's own pretrained weights."""
    import torchvision
    if name in torchvision.models.list_models(module=torchvision.models):
        weights = "DEFAULT" if pretrained else None
        try:
            return torchvision.models.get_model(name, weights=weights), 3
        except Exception as error:  # download refused offline, missing cache, ...
            raise PipelineError(
                f"Cannot load pretrained torchvision weights for '{name}' ({error}). Offline, put "
                f"the file in $TORCH_HOME/hub/checkpoints or set weights: PATH for this member.") from None
    import timm
    if timm.is_model(name):
        try:
            return timm.create_model(name, pretrained=pretrained), 3
        except Exception as error:
            raise PipelineError(
                f"Cannot load pretrained timm weights for '{name}' ({error}). Offline, set "
                f"weights: PATH for this member, or HF_HOME to a cache that holds them.") from None
    raise PipelineError(
        f"Unknown model '{name}': not one of {', '.join(OWN_MODELS)}, torchvision's or timm's models.")


def load_backbone_weights(net: nn.Module, path: str) -> None:
    """Load a local state_dict (fp16 files are cast); any mismatch is an error, never random init."""
    if not Path(path).is_file():
        raise PipelineError(f"Weights file {path} not found: fix 'weights:' in the competition yaml.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PipelineError(f"Weights file {path} is not a readable state_dict ({error}).") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    result = net.load_state_dict(state, strict=False)
    own = net.state_dict()
    shape_errors = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if result.missing_keys or result.unexpected_keys or shape_errors:
        raise PipelineError(
            f"Weights file {path} does not fit this model: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}, wrong shapes {shape_errors[:3]}.")


def _last_linear(net: nn.Module) -> tuple[nn.Module, str, str, nn.Linear]:
    found = None
    for module_name, module in net.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                qualified = f"{module_name}.{child_name}" if module_name else child_name
                found = (module, child_name, qualified, child)
    if found is None:
        raise PipelineError(f"Cannot find the classifier of {type(net).__name__} to replace.")
    return found


def replace_head(net: nn.Module, num_classes: int, hidden: int, dropout: float) -> str:
    """Swap the last Linear layer for a new head; returns the head's qualified name."""
    parent, attr, qualified, linear = _last_linear(net)
    if hidden:
        head = nn.Sequential(nn.Linear(linear.in_features, hidden), nn.ReLU(inplace=True),
                             nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    else:
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(linear.in_features, num_classes))
    if isinstance(parent, nn.Sequential):
        parent[int(attr)] = head
    else:
        setattr(parent, attr, head)
    return qualified


def build_model(member: Member, in_channels: int, num_classes: int, image_size: int,
                data_mean, data_std, load_weights: bool = True) -> Classifier:
    """The member's network, adapted to the data. `load_weights=False` when a checkpoint follows."""
    if member.model in OWN_MODELS:
        args = dict(member.model_args)
        if member.model == "cnn":
            args.setdefault("image_size", member.image_size or image_size)
        net = OWN_MODELS[member.model](in_channels, num_classes, **args)
        net_channels, head_name = in_channels, "head"
    else:
        net, net_channels = _library_model(member.model, member.pretrained and load_weights)
        if member.weights and load_weights:
            load_backbone_weights(net, member.weights)
        head_name = replace_head(net, num_classes, member.head_hidden, member.model_args.get("dropout", 0.2))
    if member.normalize == "imagenet":
        mean = IMAGENET_MEAN[:in_channels] if in_channels == 3 else (sum(IMAGENET_MEAN) / 3,)
        std = IMAGENET_STD[:in_channels] if in_channels == 3 else (sum(IMAGENET_STD) / 3,)
    else:
        mean, std = data_mean, data_std
    size = member.image_size if member.image_size and member.image_size != image_size else None
    return Classifier(net, head_name, mean, std, size, net_channels)


def head_parameters(model: Classifier) -> list[nn.Parameter]:
    return list(model.net.get_submodule(model.head_name).parameters())


def set_backbone_trainable(model: Classifier, trainable: bool) -> None:
    """Freeze or unfreeze everything but the head."""
    head = {id(p) for p in head_parameters(model)}
    for param in model.net.parameters():
        if id(param) not in head:
            param.requires_grad_(trainable)


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep BatchNorm running statistics fixed (call after model.train())."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def parameter_groups(model: Classifier, lr: float, decay: float, groups: int) -> list[dict]:
    """Discriminative learning rates: the head at lr, backbone layer groups at lr * decay^k,
    earlier layers lower."""
    head = head_parameters(model)
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.net.parameters() if id(p) not in head_ids]
    if decay == 1.0 or not backbone:
        return [{"params": backbone + head, "lr": lr}]
    chunks = [backbone[i * len(backbone) // groups:(i + 1) * len(backbone) // groups] for i in range(groups)]
    result = [{"params": chunk, "lr": lr * decay ** (groups - i)} for i, chunk in enumerate(chunks) if chunk]
    return result + [{"params": head, "lr": lr}]
