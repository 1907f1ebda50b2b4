"""predict --time-limit: views, then members, dropped so that the submission arrives in time."""
import pandas as pd
import pytest

from compete.cli import main
from compete.predictplan import plan_within

from helpers import TINY_PRESET, make_competition

VIEWS = {0: ["identity", "hflip"], 1: ["identity", "hflip", "vflip"]}


def test_nothing_is_dropped_when_everything_fits():
    plan = plan_within(100.0, {0: 1.0, 1: 2.0}, VIEWS, [0.5, 0.5])
    assert plan.views == VIEWS and plan.members == [0, 1] and not plan.dropped and plan.seconds == 8.0


def test_the_costliest_members_views_go_first_then_members():
    plan = plan_within(4.5, {0: 1.0, 1: 2.0}, VIEWS, [0.5, 0.5])  # 8 s of work
    assert plan.dropped == ["m1 view vflip", "m1 view hflip"] and plan.seconds == 4.0
    plan = plan_within(2.5, {0: 1.0, 1: 2.0}, VIEWS, [0.7, 0.3])
    assert plan.dropped == ["m1 view vflip", "m1 view hflip", "m0 view hflip", "member m1"]
    assert plan.members == [0] and plan.views[0] == ["identity"] and plan.seconds == 1.0


def test_the_best_weighted_member_is_the_one_that_stays():
    plan = plan_within(0.1, {0: 1.0, 1: 2.0}, VIEWS, [0.2, 0.8])
    assert plan.members == [1] and plan.views[1] == ["identity"] and "member m0" in plan.dropped
    assert "even that is estimated beyond the 0 s left: the submission will be late" in plan.says()
    assert plan_within(4.5, {0: 1.0, 1: 2.0}, VIEWS, [0.5, 0.5]).says().endswith("(estimated 4 s of 4 s left)")


@pytest.mark.slow  # trains two tiny members (a few seconds)
def test_predict_within_a_limit_drops_views_and_says_so(workspace, capsys):
    member = {**TINY_PRESET["members"][0], "tta": ["identity", "hflip"]}
    make_competition(workspace, preset={"val_fraction": 0.25, "members": [member, member]}, hflip=True)
    assert main(["train", "tiny"]) == 0
    assert main(["predict", "tiny"]) == 0
    everything = pd.read_csv(workspace / "submissions" / "tiny" / "submission.csv")
    capsys.readouterr()
    assert main(["predict", "tiny", "--time-limit", "3600"]) == 0
    assert "every view of every model fits" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(workspace / "submissions" / "tiny" / "submission.csv"), everything)
    assert main(["predict", "tiny", "--time-limit", "0.001"]) == 0  # nothing fits: the least is kept
    out = capsys.readouterr().out
    assert "dropped m" in out and "view hflip" in out and "member m" in out
    kept = pd.read_csv(workspace / "submissions" / "tiny" / "submission.csv")
    assert list(kept["id"]) == list(everything["id"]) and kept["label"].notna().all()


def test_a_limit_counts_from_the_start_of_the_process():
    """Interpreter start and imports (seconds, with torch) count against the limit too."""
    import time
    from compete.runtime import process_seconds as seconds_since_start
    first = seconds_since_start()
    time.sleep(0.05)
    assert 0 < first < seconds_since_start() < 7 * 24 * 3600
