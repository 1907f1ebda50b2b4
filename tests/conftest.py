"""The suite's fixtures: an empty workspace and a tiny competition in it (helpers.py writes it;
tests import what they share from helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import Tiny, make_competition


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty COMPETE_ROOT: competition/, inputs/ and submissions/ live under tmp_path."""
    monkeypatch.setenv("COMPETE_ROOT", str(tmp_path))
    (tmp_path / "competition").mkdir()
    return tmp_path


@pytest.fixture
def tiny(workspace) -> Tiny:
    return make_competition(workspace)
