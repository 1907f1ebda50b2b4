"""Which library builds a model name: the own models, torchvision or timm. Below config.py, so
that a yaml naming an unknown model is refused when it loads, not when the model is built."""
from __future__ import annotations

from .errors import PipelineError

OWN_MODEL_NAMES = ("cnn", "resnet_small")  # built by models.OWN_MODELS
LIBRARY_PREFIXES = {"tv/": "torchvision", "torchvision/": "torchvision", "timm/": "timm"}


def split_library(name: str) -> tuple[str | None, str]:
    """'timm/resnet18' -> ('timm', 'resnet18'); a bare name tries torchvision, then timm."""
    for prefix, library in LIBRARY_PREFIXES.items():
        if name.startswith(prefix):
            return library, name[len(prefix):]
    return None, name


def model_library(name: str) -> tuple[str, str]:
    """('own' | 'torchvision' | 'timm', architecture name) for a member's `model`; refused when
    no library has it."""
    if name in OWN_MODEL_NAMES:
        return "own", name
    library, arch = split_library(name)
    if library in (None, "torchvision"):
        import torchvision
        if arch in torchvision.models.list_models(module=torchvision.models):
            return "torchvision", arch
    if library in (None, "timm"):
        import timm
        if timm.is_model(arch):
            return "timm", arch
    raise PipelineError(
        f"Unknown model '{name}': not one of {', '.join(OWN_MODEL_NAMES)}, nor a torchvision or timm "
        f"classification model (prefix tv/ or timm/ to pick the library).")
