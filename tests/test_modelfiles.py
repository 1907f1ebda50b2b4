"""Model files run no code when read: a run folder or a `weights:` file from someone else may hold
a crafted pickle, whose unpickling would call anything it names. Each crafted file here would
create a marker file if it ran; each is refused in one line and the marker never appears."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from compete.cli import main
from compete.config import Member, PipelineError
from compete.modelfiles import load_model_file, save_model_file
from compete.models import NetSpec, build_model
from compete.runs import RunFolder

from helpers import make_competition, only_run, workspace_at


class Payload:
    """Unpickled, it runs `touch MARKER`: what a malicious checkpoint would do."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path, marker, as_torch_file: bool = True) -> None:
    """A file that runs code when unpickled: torch.save's zip format, or a bare pickle."""
    if as_torch_file:
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "error: " in err, err
    message = err.split("error: ", 1)[1].strip()  # after any progress bars
    assert message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run, trained once; each test works on a copy of the workspace."""
    root = tmp_path_factory.mktemp("trained")
    with workspace_at(root):
        make_competition(root)
        assert main(["train", "tiny"]) == 0
    return root


@pytest.fixture
def copy(trained, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(trained, root)
    monkeypatch.setenv("COMPETE_ROOT", str(root))
    return root


def test_a_model_file_keeps_tensors_arrays_and_settings_and_is_plain_safetensors(tmp_path):
    from safetensors import safe_open
    state = {"member": {"model": "cnn", "tta": ["identity"]}, "state_dict": {"net.w": torch.randn(3, 2)},
             "val_probs": np.random.default_rng(0).random((4, 3)), "score": 0.5, "fold": None}
    save_model_file(tmp_path / "m.safetensors", state)
    loaded = load_model_file(tmp_path / "m.safetensors")
    assert loaded.keys() == state.keys() and loaded["member"] == state["member"] and loaded["fold"] is None
    assert torch.equal(loaded["state_dict"]["net.w"], state["state_dict"]["net.w"])
    np.testing.assert_array_equal(loaded["val_probs"], state["val_probs"])
    with safe_open(tmp_path / "m.safetensors", "pt") as file:  # any safetensors reader opens it
        assert set(file.keys()) == {"state_dict/net.w", "val_probs"}


@pytest.mark.slow  # trains the tiny competition once for the module (a few seconds)
@pytest.mark.parametrize("as_torch_file", [True, False], ids=["torch.save", "bare pickle"])
def test_a_crafted_checkpoint_in_a_run_folder_runs_nothing(copy, tmp_path, capsys, as_torch_file):
    marker = tmp_path / "ran"
    checkpoint = RunFolder(only_run(copy, "tiny")).member_path(0, 0)
    crafted(checkpoint, marker, as_torch_file)
    assert main(["predict", "tiny"]) == 2
    assert f"{checkpoint} is not a compete model file" in one_line_error(capsys)
    assert not marker.exists()


@pytest.mark.slow
def test_a_run_of_pickled_checkpoints_is_refused_with_the_command_that_rebuilds_it(copy, tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = RunFolder(only_run(copy, "tiny"))
    folder.member_path(0, 0).unlink()
    crafted(folder.members_dir / "m0_f0.pt", marker)  # an older compete's checkpoint name
    config = json.loads(folder.config_path.read_text())
    folder.config_path.write_text(json.dumps({**config, "format": 2}))  # the last format of pickles
    assert main(["predict", "tiny"]) == 2
    err = one_line_error(capsys)
    assert f"Run {folder.name} was written in an older run format (2; this version reads 3)" in err
    assert "train it again with ./run.sh train tiny --preset default" in err
    assert not marker.exists()


@pytest.mark.slow
def test_a_crafted_resume_state_runs_nothing(copy, tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = RunFolder(only_run(copy, "tiny"))
    folder.summary_path.unlink()  # an interrupted run: its fit is to continue from the resume state
    folder.member_path(0, 0).unlink()
    crafted(folder.resume_path(0, 0), marker)
    assert main(["train", "tiny", "--resume"]) == 2
    err = one_line_error(capsys)
    assert f"Resume state {folder.resume_path(0, 0)} is not a readable state_dict" in err
    assert "GLOBAL posix.system" in err and not marker.exists()


@pytest.mark.parametrize("as_torch_file", [True, False], ids=["torch.save", "bare pickle"])
def test_a_crafted_weights_file_runs_nothing(tmp_path, as_torch_file):
    marker = tmp_path / "ran"
    crafted(tmp_path / "weights.pth", marker, as_torch_file)
    member = Member(model="mobilenet_v2", weights=str(tmp_path / "weights.pth"))
    with pytest.raises(PipelineError, match="is not a readable state_dict of tensors") as error:
        build_model(member, NetSpec(3, 32, 2, [0.5] * 3, [0.25] * 3))
    assert "\n" not in str(error.value) and not marker.exists()


def test_a_safetensors_weights_file_loads(tmp_path):
    import safetensors.torch
    import torchvision
    source = torchvision.models.mobilenet_v2()
    safetensors.torch.save_file(source.state_dict(), tmp_path / "mine.safetensors")
    member = Member(model="mobilenet_v2", weights=str(tmp_path / "mine.safetensors"))
    model = build_model(member, NetSpec(3, 32, 2, [0.5] * 3, [0.25] * 3))
    assert torch.equal(model.net.features[0][0].weight, source.features[0][0].weight)
