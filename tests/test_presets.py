"""Every shipped competition file resolves, and every member of every preset builds and runs,
starting from the local `weights:` file it names, or from the library's pretrained weights where
its cache holds them (TORCH_HOME is ../shared/torch_home in the tests; nothing is downloaded)."""
import pytest
import torch

from compete.augment import check_tta
from compete.config import PROJECT_ROOT, load_competition, resolve_run
from compete.model_names import model_library
from compete.models import NetSpec, build_model, torchvision_cache_file

SHIPPED = [(path.stem, preset) for path in sorted((PROJECT_ROOT / "competition").glob("*.yaml"))
           for preset in load_competition(path.stem).presets]


def assert_starts_from(model, path: str) -> None:
    """Every backbone tensor of `model` is the one in the weights file (the head is new)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.net.state_dict()
    shared = [key for key in state if key in own and state[key].shape == own[key].shape]
    assert len(shared) > len(state) // 2, f"{path} does not fit the member's network"
    for key in shared:
        assert torch.equal(own[key], state[key].to(own[key].dtype)), f"{key} is not the file's"


def cached_pretrained(member) -> str | None:
    """The torchvision cache file a pretrained member starts from, when the cache holds it."""
    library, arch = model_library(member.model)
    if not member.pretrained or library != "torchvision":
        return None
    path = torchvision_cache_file(arch)
    return str(path) if path.is_file() else None


@pytest.mark.slow  # builds every shipped network at full size (about 5 s on 2 CPU cores)
@pytest.mark.parametrize("name,preset", SHIPPED)
def test_shipped_preset_builds_every_member(name, preset):
    comp = load_competition(name)
    run = resolve_run(comp, preset)
    assert run.members
    images = torch.rand(2, comp.channels, comp.image_size, comp.image_size)
    for member in run.members:
        check_tta(member.tta, comp.hflip, comp.vflip)
        spec = NetSpec(comp.channels, comp.image_size, 10, [0.5] * comp.channels, [0.25] * comp.channels)
        model = build_model(member, spec, load_weights=bool(member.weights or cached_pretrained(member))).eval()
        if member.weights or cached_pretrained(member):
            assert_starts_from(model, member.weights or cached_pretrained(member))
        with torch.no_grad():
            logits = model(images)
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_photo_presets_start_from_the_librarys_own_weights():
    """No shipped preset needs a file by hand: bees' and cifar10's pretrained members name
    torchvision's weights, and the check above runs for them (the cache holds MobileNetV2)."""
    members = [member for name, preset in SHIPPED for member in resolve_run(load_competition(name), preset).members]
    assert not any(member.weights for member in members)
    assert all(m.pretrained for m in resolve_run(load_competition("bees"), "default").members)
    assert any(cached_pretrained(member) for member in members)
