"""Ensemble weights: fitted on out-of-fold probabilities, they recover how the truth mixes the
members, ignore useless or diverged members, and fall back to equal weights."""
import numpy as np

from compete.ensemble import combine, fit_weights

CLASSES = 5


def member_probs(rng, count: int, n: int) -> list[np.ndarray]:
    """Confident, varied (n, CLASSES) probability tables, one per member."""
    return [rng.dirichlet(np.full(CLASSES, 0.5), size=n) for _ in range(count)]


def draw_targets(rng, probs: np.ndarray) -> np.ndarray:
    """One label per row, drawn from that row's distribution."""
    cumulative = probs.cumsum(axis=1)
    return (rng.random((len(probs), 1)) > cumulative).sum(axis=1).clip(max=CLASSES - 1)


def test_fit_recovers_the_weights_that_generated_the_labels():
    rng = np.random.default_rng(0)
    members = member_probs(rng, 3, 20_000)
    truth = np.array([0.6, 0.3, 0.1])
    targets = draw_targets(rng, combine(members, truth))
    weights = fit_weights(members, targets)
    np.testing.assert_allclose(weights, truth, atol=0.03)
    assert np.isclose(weights.sum(), 1.0) and (weights >= 0).all()


def test_a_member_that_knows_nothing_gets_no_weight():
    rng = np.random.default_rng(1)
    informed = member_probs(rng, 1, 5_000)[0]
    noise = member_probs(rng, 1, 5_000)[0]
    targets = draw_targets(rng, informed)
    weights = fit_weights([informed, noise], targets)
    assert weights[1] < 0.02 and np.isclose(weights.sum(), 1.0)


def test_a_diverged_member_is_dropped_and_the_combination_stays_finite():
    rng = np.random.default_rng(2)
    informed = member_probs(rng, 1, 2_000)[0]
    diverged = np.full_like(informed, np.nan)
    targets = draw_targets(rng, informed)
    weights = fit_weights([informed, diverged], targets)
    np.testing.assert_allclose(weights, [1.0, 0.0], atol=1e-6)
    assert np.isfinite(combine([informed, diverged], weights)).all()


def test_equal_weights_when_there_is_nothing_to_choose():
    rng = np.random.default_rng(3)
    probs = member_probs(rng, 1, 500)[0]
    targets = draw_targets(rng, probs)
    assert fit_weights([probs], targets).tolist() == [1.0]
    np.testing.assert_allclose(fit_weights([probs, probs, probs], targets), [1 / 3] * 3)


def test_combine_is_the_normalized_weighted_average():
    rng = np.random.default_rng(4)
    a, b = member_probs(rng, 2, 10)
    np.testing.assert_allclose(combine([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    np.testing.assert_allclose(combine([a, b], [2, 2]), (a + b) / 2)
    np.testing.assert_allclose(combine([a, b], [0.75, 0.25]).sum(axis=1), 1.0)


def test_temperature_recovers_how_much_a_member_was_softened():
    from compete.ensemble import fit_temperature
    from compete.targets import SINGLE_LABEL
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = np.array([rng.choice(5, p=p) for p in true_probs])
    softened = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)  # under-confident
    temperature = fit_temperature(softened, targets)
    assert abs(temperature - 0.5) < 0.05
    assert np.allclose(SINGLE_LABEL.calibrate(softened, temperature).sum(1), 1)


def test_calibrated_blend_favours_the_accurate_under_confident_member():
    from compete.ensemble import fit_ensemble
    from compete.targets import SINGLE_LABEL
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 4, 3000)
    correct = np.eye(4)[targets]
    accurate = 0.7 * correct + 0.3 * np.eye(4)[rng.integers(0, 4, 3000)]      # ~77% right
    accurate = 0.4 * accurate + 0.6 / 4                                          # softened
    sharp = np.where(rng.random((3000, 1)) < 0.6, correct, np.eye(4)[rng.integers(0, 4, 3000)])
    sharp = 0.97 * sharp + 0.03 / 4                                              # ~70% right, confident
    folds = np.zeros(len(targets), np.int64)  # a hold-out: one fold model per member
    fitted = fit_ensemble([accurate, sharp], targets, folds, 1, SINGLE_LABEL, "accuracy")
    assert fitted.temperatures[0][0] < 1  # sharpened
    assert fitted.weights[0] > fitted.weights[1]
    mixed = fitted.outputs([accurate, sharp], folds, SINGLE_LABEL)
    assert (mixed.argmax(1) == targets).mean() >= (accurate.argmax(1) == targets).mean() - 0.01
