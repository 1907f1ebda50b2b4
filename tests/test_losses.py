"""Training losses per target kind, class weights and the class-balanced sampler."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compete.config import Member
from compete.errors import PipelineError
from compete.losses import criterion, sampling_weights
from compete.targets import Binary, MultiLabel, Regression, Target
from compete.train import epoch_order

IMBALANCED = np.array([0] * 90 + [1] * 10)  # 90% / 10%


def test_focal_loss_without_focus_is_cross_entropy_and_with_it_spares_easy_images():
    logits, labels = torch.tensor([[4.0, 0.0], [0.5, 0.0]]), torch.tensor([0, 1])
    target = Target(["a", "b"])
    plain = criterion(target, Member(label_smoothing=0.0), IMBALANCED)(logits, labels)
    assert plain == pytest.approx(F.cross_entropy(logits, labels).item())
    unfocused = criterion(target, Member(loss="focal", focal_gamma=0.0, label_smoothing=0.0), IMBALANCED)
    assert unfocused(logits, labels) == pytest.approx(plain.item())
    focal = criterion(target, Member(loss="focal", focal_gamma=2.0, label_smoothing=0.0), IMBALANCED)
    easy, hard = (focal(logits[i:i + 1], labels[i:i + 1]).item() for i in range(2))
    easy_ce, hard_ce = (F.cross_entropy(logits[i:i + 1], labels[i:i + 1]).item() for i in range(2))
    assert easy / easy_ce < 0.001 and hard / hard_ce > 0.3  # the sure image hardly counts


@pytest.mark.parametrize("target", [Target(["a", "b"]), Binary(["a", "b"])], ids=["softmax", "sigmoid"])
def test_balanced_class_weights_weigh_the_rare_class_by_inverse_frequency(target):
    logits = torch.zeros(2, target.outputs)  # the same loss for either label, unweighted
    weighted = criterion(target, Member(class_weights="balanced", label_smoothing=0.0), IMBALANCED)
    common, rare = weighted(logits[:1], torch.tensor([0])), weighted(logits[1:], torch.tensor([1]))
    assert (rare / common).item() == pytest.approx(9.0)  # 90 / 10
    sqrt = criterion(target, Member(class_weights="sqrt", label_smoothing=0.0), IMBALANCED)
    assert (sqrt(logits[1:], torch.tensor([1])) / sqrt(logits[:1], torch.tensor([0]))).item() == pytest.approx(3.0)


def test_tag_weights_weigh_each_tags_positives_against_its_negatives():
    tags = np.zeros((100, 2), dtype=np.float32)
    tags[:20, 0], tags[:50, 1] = 1, 1  # tag 0: 20 positives of 100; tag 1: 50
    target = MultiLabel(["x", "y"])
    weighted = criterion(target, Member(class_weights="balanced", label_smoothing=0.0), tags)
    plain = criterion(target, Member(label_smoothing=0.0), tags)
    logits, positive = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    # tag 0's positive term weighs 80 / 20 = 4, tag 1's negative term 1
    assert weighted(logits, positive).item() == pytest.approx(plain(logits, positive).item() * (4 + 1) / 2)


def test_regression_learns_the_standardized_number():
    values = np.array([10.0, 20.0, 30.0, 40.0], dtype=np.float32)
    target = Regression([], float(values.mean()), float(values.std()))
    mse = criterion(target, Member(), values)
    at_the_mean = torch.zeros(4, 1)  # outputs the centre for every image
    assert mse(at_the_mean, torch.from_numpy(values)).item() == pytest.approx(1.0)  # variance 1
    exact = torch.from_numpy((values - target.center) / target.scale)[:, None]
    assert mse(exact, torch.from_numpy(values)).item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(target.activate(exact)[:, 0], torch.from_numpy(values))
    smooth = criterion(target, Member(loss="smooth_l1"), values)(at_the_mean, torch.from_numpy(values))
    assert smooth.item() < 1.0  # linear beyond one standard deviation


def test_a_loss_of_another_kind_is_refused():
    with pytest.raises(PipelineError, match="does not train a regression target"):
        criterion(Regression([]), Member(loss="focal"), np.zeros(3, dtype=np.float32))
    with pytest.raises(PipelineError, match="class_weights 'inverse'"):
        criterion(Target(["a", "b"]), Member(class_weights="inverse"), IMBALANCED)


def test_the_balanced_sampler_draws_every_class_equally_often():
    member = Member(sampler="balanced")
    draw = torch.as_tensor(sampling_weights(Target(["a", "b"]), member, IMBALANCED), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([epoch_order(100, draw, generator) for _ in range(200)]).numpy()
    assert len(drawn) == 20_000
    assert abs(np.mean(IMBALANCED[drawn]) - 0.5) < 0.02  # the 10% class makes half the draws
    assert sampling_weights(Target(["a", "b"]), Member(), IMBALANCED) is None
    assert sorted(epoch_order(100, None, generator).tolist()) == list(range(100))  # a permutation
