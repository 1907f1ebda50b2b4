"""Run history: provenance in config.json, the run table, and the submission manifest."""
import json
import re
import shutil
import subprocess

import pytest

from compete.cli import main
from compete.config import load_competition
from compete.history import git_commit, input_hash

from helpers import REPO, run_summary, TINY_PRESET, make_competition, workspace_at

SHORT_PRESET = {**TINY_PRESET, "members": [{**TINY_PRESET["members"][0], "epochs": 1}]}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A tiny competition trained twice, with different presets; shared by this module's tests."""
    root = tmp_path_factory.mktemp("workspace")
    with workspace_at(root):
        tiny = make_competition(root, presets={"default": TINY_PRESET, "short": SHORT_PRESET})
        assert main(["train", tiny.name, "--device", "cpu"]) == 0
        assert main(["train", tiny.name, "--device", "cpu", "--preset", "short"]) == 0
        yield tiny, root / "submissions" / tiny.name / "runs"


def head() -> str:
    """This checkout's commit now (read when asserting: a commit meanwhile moves it)."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the printed table, split on whitespace, the * mark dropped."""
    return [line.lstrip("* ").split() for line in text.splitlines() if re.match(r"^[* ] \d{8}-", line)]


@pytest.mark.slow
def test_run_table_lists_runs_newest_first_with_their_scores(two_runs, capsys):
    tiny, runs = two_runs
    capsys.readouterr()
    assert main(["runs", tiny.name]) == 0
    rows = table_rows(capsys.readouterr().out)
    config = {p.name: json.loads((p / "config.json").read_text()) for p in runs.iterdir()}
    newest_first = sorted(config, key=lambda run: config[run]["provenance"]["started"], reverse=True)
    assert [row[0] for row in rows] == newest_first
    assert [row[1] for row in rows] == ["short", "default"]
    for row in rows:
        assert row[2] == f"{run_summary(runs / row[0])['ensemble_score']:.4f}"


@pytest.mark.slow
def test_unfinished_runs_are_listed_and_marked(two_runs, capsys):
    tiny, runs = two_runs
    finished = sorted(runs.iterdir())[0]
    crashed = runs / "99990101-000000-default"
    shutil.copytree(finished, crashed)
    (crashed / "summary.json").unlink()
    capsys.readouterr()
    try:
        assert main(["runs"]) == 0  # every competition
    finally:
        shutil.rmtree(crashed)  # the other tests see the two finished runs only
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if crashed.name in line)
    assert "unfinished" in line and "epochs logged" in line
    assert f"{tiny.name}: 3 run(s)" in out


@pytest.mark.slow
def test_config_records_commit_and_input_hash(two_runs):
    tiny, runs = two_runs
    for run_dir in runs.iterdir():
        origin = json.loads((run_dir / "config.json").read_text())["provenance"]
        assert origin["input_hash"] == input_hash(load_competition(tiny.name), tiny.data_dir)
        assert origin["git_commit"] == head() and isinstance(origin["git_dirty"], bool)


def test_the_commit_is_this_checkouts_head():
    assert re.fullmatch(r"[0-9a-f]{40}", head()), "the tests run in a git checkout"
    origin = git_commit()
    assert origin["git_commit"] == head() and isinstance(origin["git_dirty"], bool)


def test_without_git_the_commit_is_unknown(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable to run
    assert git_commit() == {"git_commit": None, "git_dirty": None}


def test_input_hash_changes_with_the_input_files(workspace):
    tiny = make_competition(workspace)
    comp = load_competition(tiny.name)
    before = input_hash(comp, tiny.data_dir)
    assert input_hash(comp, tiny.data_dir) == before
    with open(tiny.data_dir / "train.csv", "a") as csv:
        csv.write("999,0\n")
    after_csv = input_hash(comp, tiny.data_dir)
    assert after_csv != before
    (tiny.data_dir / "train" / "1.png").unlink()
    assert input_hash(comp, tiny.data_dir) != after_csv


@pytest.mark.slow
def test_submission_manifest_names_the_run_that_made_it(two_runs, capsys):
    tiny, runs = two_runs
    first = min(runs.iterdir(), key=lambda p: json.loads((p / "config.json").read_text())["provenance"]["started"])
    assert main(["predict", tiny.name, "--device", "cpu", "--run", first.name]) == 0
    manifest = json.loads((runs.parent / "submission.json").read_text())
    summary = run_summary(first)
    assert manifest["run"] == first.name
    assert manifest["score"] == summary["ensemble_score"] and manifest["weights"] == summary["weights"]
    assert [m["model"] for m in manifest["members"]] == ["cnn"]
    capsys.readouterr()
    assert main(["runs", tiny.name]) == 0
    marked = [line for line in capsys.readouterr().out.splitlines() if line.startswith("* ")]
    assert len(marked) == 1 and first.name in marked[0]


def test_no_runs_says_how_to_train(workspace, capsys):
    make_competition(workspace)
    assert main(["runs", "tiny"]) == 0
    assert "./run.sh train tiny" in capsys.readouterr().out
