"""Score intervals (intervals.py) and `compare` (compare.py): a bootstrap that covers the true
score as often as it says, resamples that keep classes and groups, a paired comparison, the
public score's interval, and runs compared only on the same images."""
import numpy as np
import pytest

from compete.cli import main
from compete.compare import Validated, paired_runs
from compete.config import PipelineError, load_competition
from compete.history import format_runs, public_gaps
from compete.intervals import (Bootstrap, bootstrap_scores, paired_bootstrap, public_interval, score_intervals,
                               wilson_interval)
from compete.metrics import metric
from compete.targets import Target

from helpers import make_competition, run_summary

CLASSES = [str(c) for c in range(10)]
SINGLE = Target(CLASSES)


def stand_in(rng, rows: int, accuracy: float, groups: np.ndarray | None = None):
    """Labels and a stand-in classifier's labels on one simulated hold-out: each image (each
    group, all its images alike) is right with probability `accuracy`, else a wrong class."""
    targets = rng.integers(0, 10, rows)
    units = np.arange(rows) if groups is None else groups
    right = (rng.random(units.max() + 1) < accuracy)[units]
    wrong = (targets + rng.integers(1, 10, rows)) % 10
    return targets, np.where(right, targets, wrong)


def coverage(accuracy: float, holdouts: int, rows: int, group_size: int, keep_groups: bool) -> float:
    """Share of simulated hold-outs whose 95% interval holds the classifier's true accuracy."""
    rng = np.random.default_rng(0)
    groups = np.arange(rows) // group_size
    covered = 0
    for h in range(holdouts):
        targets, predicted = stand_in(rng, rows, accuracy, groups)
        resampling = Bootstrap(targets, groups if keep_groups else None, seed=h, resamples=400)
        low, high = score_intervals("accuracy", SINGLE, targets, [predicted], resampling)[0]
        covered += low <= accuracy <= high
    return covered / holdouts


def test_intervals_cover_a_known_accuracy_as_often_as_they_say():
    assert 0.90 <= coverage(0.9, holdouts=300, rows=600, group_size=1, keep_groups=False) <= 0.99


def test_groups_resampled_whole_cover_where_rows_alone_do_not():
    """Images of one group predicted alike (near-duplicates): resampling single rows pretends
    there are four times as many independent images, and its interval is too narrow."""
    assert 0.90 <= coverage(0.85, holdouts=200, rows=800, group_size=4, keep_groups=True) <= 0.99
    assert coverage(0.85, holdouts=200, rows=800, group_size=4, keep_groups=False) < 0.85


def test_resamples_keep_each_class_size_and_draw_a_group_whole():
    strata = np.repeat([0, 1, 2], [4, 6, 12])
    counts = np.concatenate(list(Bootstrap(strata, None, seed=1, resamples=50).counts(50)))
    assert [set(counts[:, strata == s].sum(1)) for s in range(3)] == [{4}, {6}, {12}]
    assert len({tuple(c) for c in counts}) == 50  # each resample its own draw
    groups = np.arange(22) // 2  # pairs of images, each pair within one class
    counts = np.concatenate(list(Bootstrap(strata, groups, seed=1, resamples=50).counts(50)))
    assert (counts[:, 0::2] == counts[:, 1::2]).all()  # both images of a pair drawn alike
    assert [set(counts[:, strata == s].sum(1)) for s in range(3)] == [{4}, {6}, {12}]


@pytest.mark.parametrize("name", ["accuracy", "log_loss", "top3_accuracy", "f1_macro"])
def test_every_resample_is_the_metric_of_its_drawn_rows(name):
    """The count-weighted shortcut of mean-over-rows metrics scores each resample exactly as the
    metric does on the repeated rows (f1_macro takes that slow path itself)."""
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 10, 300)
    probs = rng.dirichlet(np.ones(10), 300)
    probs[np.arange(300), targets] += 0.05
    probs /= probs.sum(1, keepdims=True)
    entry = metric(name)
    predictions = probs if entry.on_probabilities else probs.argmax(1)
    resampling = Bootstrap(targets, None, seed=3, resamples=200)
    fast = bootstrap_scores(name, SINGLE, targets, [predictions], resampling)[:, 0]
    counts = np.concatenate(list(resampling.counts(200)))
    slow = [entry.function(targets[np.repeat(np.arange(300), c)], predictions[np.repeat(np.arange(300), c)])
            for c in counts]
    assert np.allclose(fast, slow)
    assert fast.std() > 0


def test_the_paired_bootstrap_sees_a_small_sure_gain_and_no_gain():
    rng = np.random.default_rng(4)
    targets, predicted = stand_in(rng, 2000, 0.9)
    better = predicted.copy()
    fixed = np.flatnonzero(predicted != targets)[:20]  # 1% of the images, right now, nothing lost
    better[fixed] = targets[fixed]
    resampling = Bootstrap(targets, None, seed=0)
    gain = paired_bootstrap("accuracy", SINGLE, targets, predicted, better, resampling)
    assert gain.difference == pytest.approx(0.01)
    assert 0 < gain.difference_interval[0] < 0.01 < gain.difference_interval[1]
    assert gain.b_better > 0.99
    # each run alone: intervals about ±1.3 points that overlap; only the pairing tells them apart
    assert gain.interval_a[1] > gain.interval_b[0]
    same = paired_bootstrap("accuracy", SINGLE, targets, predicted, predicted, resampling)
    assert same.difference_interval == [0.0, 0.0] and same.b_better == 0 and same.ties == 1
    lower_is_better = paired_bootstrap("log_loss", SINGLE, targets, np.eye(10)[predicted] * 0.9 + 0.01,
                                       np.eye(10)[better] * 0.9 + 0.01, resampling)
    assert lower_is_better.difference < 0 and lower_is_better.b_better > 0.99


def validated(name: str, folds: np.ndarray, targets: np.ndarray, predicted: np.ndarray) -> Validated:
    rows = np.flatnonzero(folds >= 0)
    return Validated(name, {"run": {"folds": 0, "seed": 0}, "competition": {}}, "accuracy", SINGLE, rows,
                     targets, None, folds, predicted, predicted)


def test_compare_refuses_runs_that_validated_different_images():
    rng = np.random.default_rng(5)
    targets, predicted = stand_in(rng, 100, 0.8)
    split_a, split_b = np.full(1000, -1), np.full(1000, -1)
    split_a[:100], split_b[100:200] = 0, 0
    with pytest.raises(PipelineError, match="validated different images.*same --seed") as refusal:
        paired_runs(validated("A", split_a, targets, predicted), validated("B", split_b, targets, predicted))
    assert "\n" not in str(refusal.value)
    other_labels = (targets + 1) % 10
    with pytest.raises(PipelineError, match="different labels"):
        paired_runs(validated("A", split_a, targets, predicted), validated("B", split_a, other_labels, predicted))
    assert paired_runs(validated("A", split_a, targets, predicted),
                       validated("B", split_a, targets, predicted)).difference == 0


def test_public_score_interval_from_the_public_test_size():
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = public_interval("accuracy", 0.93, 10_000, None, 0)
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.93 * 0.07 / 10_000), rel=0.02)
    # other metrics: the local interval's width, scaled by sqrt(local / public) images
    assert public_interval("log_loss", 0.30, 4000, [0.27, 0.33], 1000) == pytest.approx([0.285, 0.315])


def table_row(run: str, local: float, public: float | None) -> dict:
    return {"run": run, "preset": "default", "models": ["cnn"], "commit": "abc1234", "time_limit": 0,
            "epochs_logged": 1, "taught": "", "public": "-" if public is None else f"{public:.4f}", "public_score": public,
            "summary": {"metric": "accuracy", "ensemble_score": local, "score_interval": [local - 0.01, local + 0.01],
                        "validated": 6000, "folds": 1, "seconds": 60.0}}


def test_runs_shows_public_minus_local_and_the_public_scores_own_interval():
    rows = [table_row("20260101-000000-a", 0.94, 0.93), table_row("20260102-000000-b", 0.95, 0.945),
            table_row("20260103-000000-c", 0.90, None)]
    assert public_gaps(rows).startswith("public - local over 2 uploaded runs: mean -0.0075, sd 0.0035")
    text = format_runs("apparel", rows, public_rows=10_000)
    assert "[0.9300, 0.9500]" in text and "0.9300±0.0050" in text  # local interval, public ± (Wilson)
    assert public_gaps(rows[2:]) is None
    assert "1 uploaded run" in public_gaps(rows[:1])


def test_public_rows_is_checked_at_load(workspace):
    make_competition(workspace, public_rows=5000)
    assert load_competition("tiny").public_rows == 5000
    path = workspace / "competition" / "tiny.yaml"
    for wrong in ("0", "many"):
        path.write_text(path.read_text().replace("public_rows: 5000", f"public_rows: {wrong}"))
        with pytest.raises(PipelineError, match="public_rows"):
            load_competition("tiny")
        path.write_text(path.read_text().replace(f"public_rows: {wrong}", "public_rows: 5000"))


@pytest.mark.slow
def test_train_saves_intervals_and_compare_pairs_runs_of_one_split(workspace, capsys):
    make_competition(workspace, n_train=80)
    for options in ([], ["--epochs", "1"], ["--seed", "1"]):
        assert main(["train", "tiny", "--device", "cpu", *options]) == 0
    runs = sorted((workspace / "submissions" / "tiny" / "runs").iterdir())
    for run_dir in runs:
        summary = run_summary(run_dir)
        low, high = summary["score_interval"]
        assert low <= summary["ensemble_score"] <= high
        low, high = summary["members"][0]["score_interval"]
        assert low <= summary["members"][0]["score"] <= high
    assert f"[{low:.4f}, {high:.4f}]" in capsys.readouterr().out
    assert main(["compare", "tiny", runs[0].name, runs[1].name]) == 0
    out = capsys.readouterr().out
    assert "B - A" in out and "same 20 images" in out and "resamples" in out
    assert main(["compare", "tiny", runs[0].name, runs[2].name]) == 2
    err = capsys.readouterr().err
    assert "validated different images" in err and len(err.strip().splitlines()) == 1
