"""Test-time augmentation: each view keeps the batch's shape, prediction averages the views'
probabilities (and the folds'), and flips the competition forbids are refused."""
import numpy as np
import pytest
import torch

from compete.augment import TTA, check_tta
from compete.config import Member, load_competition, resolve_run
from compete.errors import PipelineError
from compete.data import load_train
from compete.splits import holdout_split
from compete.files import DataDir
from compete.models import NetSpec, build_model
from compete.runtime import start_session
from compete.pipeline import train_competition
from compete.predict import fold_outputs
from compete.runs import load_checkpoint, read_checkpoint, save_checkpoint

from helpers import nchw, cpu_session, make_competition

SHAPE = NetSpec(channels=1, image_size=8, num_classes=3, mean=[0.5], std=[0.25])


@pytest.mark.parametrize("name", sorted(TTA))
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32)])
def test_every_view_keeps_the_batch_shape(name, shape):
    images = torch.rand(shape)
    view = TTA[name](images)
    assert view.shape == images.shape and view.dtype == images.dtype


def test_views_move_pixels_the_way_their_names_say():
    images = torch.rand(2, 1, 6, 6)
    assert torch.equal(TTA["identity"](images), images)
    assert torch.equal(TTA["hflip"](images)[..., 0], images[..., -1])
    assert torch.equal(TTA["vflip"](images)[..., 0, :], images[..., -1, :])
    assert torch.equal(TTA["shift_left"](images)[..., :-1], images[..., 1:])
    assert torch.equal(TTA["shift_right"](images)[..., 1:], images[..., :-1])
    assert torch.equal(TTA["shift_up"](images)[..., :-1, :], images[..., 1:, :])
    assert torch.equal(TTA["shift_down"](images)[..., 1:, :], images[..., :-1, :])


def write_member(run_dir, fold: int, tta: list[str]) -> torch.nn.Module:
    """A trained-looking member checkpoint (random weights) in a run folder."""
    member = Member(model="cnn", model_args={"widths": [4], "convs": 1}, tta=tta)
    model = build_model(member, SHAPE)
    save_checkpoint(run_dir / "members" / f"m0_f{fold}.safetensors", model.state_dict(), member, SHAPE,
                    {"epoch": 1, "fold": fold})
    return model.eval()


def test_prediction_averages_probabilities_over_views_and_folds(tmp_path):
    (tmp_path / "members").mkdir()
    tta = ["identity", "hflip", "shift_up"]
    models = [write_member(tmp_path, fold, tta) for fold in range(2)]
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    [folds] = fold_outputs(tmp_path, images, cpu_session().runtime)
    assert [fold for fold, _ in folds] == [0, 1]
    probs = np.mean([outputs for _, outputs in folds], axis=0)
    scaled = images.float() / 255
    with torch.no_grad():
        expected = torch.stack([model(TTA[name](scaled)).softmax(1)
                                for model in models for name in tta]).mean(0)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_check_tta_refuses_flips_the_competition_forbids():
    assert check_tta(["identity", "hflip"], hflip=True, vflip=False) == ["identity", "hflip"]
    with pytest.raises(PipelineError, match="hflip"):
        check_tta(["identity", "hflip"], hflip=False, vflip=False)
    with pytest.raises(PipelineError, match="vflip"):
        check_tta(["vflip"], hflip=True, vflip=False)


def test_check_tta_refuses_unknown_and_empty_lists():
    with pytest.raises(PipelineError, match="Unknown TTA transform 'rotate'"):
        check_tta(["rotate"], hflip=True, vflip=True)
    with pytest.raises(PipelineError, match="empty"):
        check_tta([], hflip=True, vflip=True)


@pytest.mark.slow
def test_hold_out_probabilities_are_the_members_tta_average(workspace):
    """The validation score, the ensemble weights and the submission all see the same views."""
    preset = {"val_fraction": 0.25, "members": [{
        "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0}, "epochs": 2,
        "batch_size": 8, "lr": 0.01, "pad_crop": 0, "tta": ["identity", "hflip"]}]}
    tiny = make_competition(workspace, n_train=64, preset=preset, hflip=True)
    comp = load_competition(tiny.name)
    run = resolve_run(comp, "default", {"device": "cpu", "precision": "fp32"})
    run_dir = train_competition(start_session(comp, run), tiny.data_dir)
    dataset = load_train(comp, DataDir(tiny.data_dir))
    _, val_idx = holdout_split(dataset.train_targets, 0.25, 0)
    model, member = load_checkpoint(run_dir / "members" / "m0_f0.safetensors", torch.device("cpu"))
    scaled = nchw(dataset.train_images[val_idx]).float() / 255
    with torch.no_grad():
        views = [model(TTA[name](scaled)).softmax(1) for name in member.tta]
    oof = np.load(run_dir / "oof_m0.npy")[val_idx]
    np.testing.assert_allclose(oof, torch.stack(views).mean(0).numpy(), atol=1e-5)
    assert not np.allclose(oof, views[0].numpy(), atol=1e-5)  # not the identity view alone


def test_a_checkpoint_holds_its_net_spec_as_a_plain_dict_and_predicts_alone(tmp_path):
    """Runs saved before NetSpec existed hold `shape` as a plain dict: same keys, same model."""
    (tmp_path / "members").mkdir()
    model = write_member(tmp_path, 0, ["identity"])
    path = tmp_path / "members" / "m0_f0.safetensors"
    checkpoint = read_checkpoint(path)
    assert checkpoint["shape"] == {"channels": 1, "image_size": 8, "num_classes": 3, "mean": [0.5], "std": [0.25],
                                   "metadata": None}
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    [[(_, probs)]] = fold_outputs(tmp_path, images, cpu_session().runtime)
    with torch.no_grad():
        expected = model(images.float() / 255).softmax(1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
