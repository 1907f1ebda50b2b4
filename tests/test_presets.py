"""Every shipped competition file resolves, and every member of every preset builds and runs."""
import pytest
import torch

from compete.augment import check_tta
from compete.config import PROJECT_ROOT, load_competition, resolve_run
from compete.models import build_model

SHIPPED = [(path.stem, preset) for path in sorted((PROJECT_ROOT / "competition").glob("*.yaml"))
           for preset in load_competition(path.stem).presets]


@pytest.mark.parametrize("name,preset", SHIPPED)
def test_shipped_preset_builds_every_member(name, preset):
    comp = load_competition(name)
    run = resolve_run(comp, preset)
    assert run.members
    images = torch.rand(2, comp.channels, comp.image_size, comp.image_size)
    for member in run.members:
        check_tta(member.tta, comp.hflip, comp.vflip)
        model = build_model(member, comp.channels, 10, comp.image_size, [0.5] * comp.channels,
                            [0.25] * comp.channels, load_weights=False).eval()
        with torch.no_grad():
            logits = model(images)
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
