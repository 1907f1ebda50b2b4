"""Transfer-learning controls over a built Classifier: which parameters form the new head,
freezing the backbone or its BatchNorm statistics, and discriminative learning-rate groups."""
from __future__ import annotations

from torch import nn

from .models import Classifier


def head_parameters(model: Classifier) -> list[nn.Parameter]:
    """The new head's parameters: the net's head, and the metadata fusion head where there is one."""
    fusion = [] if model.fusion is None else list(model.fusion.parameters())
    return list(model.net.get_submodule(model.head_name).parameters()) + fusion


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


CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # hold layers in forward order


def _parts(module: nn.Module, skip: set[int]) -> list:
    """A module's parameters outside `skip`, one level down in registration order: its own
    (class tokens, position embeddings), then each child holding some, containers opened."""
    own = [p for p in module.parameters(recurse=False) if id(p) not in skip]
    parts = [own] if own else []
    for child in module.children():
        if any(id(p) not in skip for p in child.parameters()):
            parts += _parts(child, skip) if isinstance(child, CONTAINERS) else [child]
    return parts


def _unit_params(unit, skip: set[int]) -> list[nn.Parameter]:
    return [p for p in (unit.parameters() if isinstance(unit, nn.Module) else unit) if id(p) not in skip]


def depth_units(net: nn.Module, skip: set[int]) -> list[list[nn.Parameter]]:
    """The parameters outside `skip` as blocks in depth order (registration order is forward
    order in torchvision and timm): layers and blocks stay whole, containers are opened, and so
    is any block holding more than half the parameters (a ViT's encoder). resnet18 gives conv1,
    bn1 and its eight BasicBlocks."""
    units = _parts(net, skip)
    total = sum(p.numel() for u in units for p in _unit_params(u, skip))
    while units:
        sizes = [sum(p.numel() for p in _unit_params(u, skip)) for u in units]
        big = max(range(len(units)), key=sizes.__getitem__)
        unit = units[big]
        if not (isinstance(unit, nn.Module) and sizes[big] > total / 2 and next(unit.children(), None)):
            break
        units[big:big + 1] = _parts(unit, skip)
    seen, result = set(skip), []
    for unit in units:
        params = _unit_params(unit, seen)  # tied weights belong to their first block only
        seen.update(id(p) for p in params)
        if params:
            result.append(params)
    return result


def parameter_groups(model: Classifier, lr: float, decay: float, groups: int) -> list[dict]:
    """Discriminative learning rates: the head at lr, then the backbone cut in depth order into
    `groups` groups, the k-th from the top at lr * decay^k, so the earliest layers learn slowest."""
    head = head_parameters(model)
    if decay == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]  # the net's, then the fusion's
    units = depth_units(model.net, {id(p) for p in head})
    if not units:
        return [{"params": head, "lr": lr}]
    count = min(groups, len(units))
    chunks = [sum(units[k * len(units) // count:(k + 1) * len(units) // count], [])
              for k in range(count)]
    return [{"params": chunk, "lr": lr * decay ** (count - k)} for k, chunk in enumerate(chunks)] + \
        [{"params": head, "lr": lr}]
