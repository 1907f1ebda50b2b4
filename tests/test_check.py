"""`./run.sh check NAME`: every problem at once, each naming its file and row or id."""
import re
import shutil

import pytest

from compete import data as data_module
from compete.check import check_competition
from compete.cli import main
from compete.config import load_competition

from helpers import decode_calls, make_competition, put_file, read_file


def test_a_clean_competition_has_no_problems(tiny, capsys):
    assert main(["check", tiny.name]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "train images (48 read): PNG L 8x8 x48" in out


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_check_reports_every_problem_not_just_the_first(workspace, capsys, zipped):
    tiny = make_competition(workspace, zipped=zipped)
    text = read_file(tiny, "train.csv").decode()
    text = text.replace("\n7,0\n", "\n7,\n").replace("\n8,1\n", "\n../8,1\n") + "3,0\n"
    put_file(tiny, "train.csv", text.encode())
    put_file(tiny, "train/5.png", b"")
    put_file(tiny, "train/9.png", None)
    put_file(tiny, "test/50.png", b"GIF89a")
    sample = read_file(tiny, "sample_submission.csv").decode().replace("\n49,", "\n999,")
    put_file(tiny, "sample_submission.csv", sample.encode())

    assert main(["check", tiny.name]) == 1
    out = capsys.readouterr().out
    problems = re.findall(r"^  \d+\. (.*)$", out, flags=re.MULTILINE)
    expected = [
        ("train.csv line(s) 9", "'../8'", "does not name a file inside the image folder"),
        ("train.csv", "id '3' appears on lines 4, 50"),
        ("train.csv line(s) 8", "id '7'", "missing label"),
        ("sample_submission.csv does not match", "'49'", "'999'"),
        ("training image(s) not found", "train/9.png"),
        ("training image(s) cannot be read", "train/5.png", "id '5'", "empty file"),
        ("test image(s) not found", "test/999.png"),
        ("test image(s) cannot be read", "test/50.png", "id '50'"),
    ]
    assert len(problems) == len(expected)
    for fragments in expected:
        assert any(all(f in problem for f in fragments) for problem in problems), fragments


def test_check_reads_another_data_folder_and_writes_nothing_into_it(workspace, tmp_path, capsys):
    tiny = make_competition(workspace)
    elsewhere = tmp_path / "download"
    shutil.copytree(tiny.data_dir, elsewhere)
    put_file(tiny, "train/5.png", b"")  # only the default folder is broken
    before = sorted(p.name for p in elsewhere.rglob("*"))
    assert main(["check", tiny.name, "--data", str(elsewhere)]) == 0
    assert main(["check", tiny.name]) == 1
    assert sorted(p.name for p in elsewhere.rglob("*")) == before


def test_check_decodes_once_so_training_reuses_its_cache(tiny, monkeypatch):
    calls = decode_calls(monkeypatch)
    comp = load_competition(tiny.name)
    assert not check_competition(comp, tiny.data_dir).found
    assert len(calls) == 2  # train and test
    data_module.load_train(comp, data_module.DataDir(tiny.data_dir))
    assert len(calls) == 2


def test_check_of_an_unknown_competition_is_an_error(workspace, capsys):
    assert main(["check", "nope"]) == 2
    assert "Unknown competition 'nope'" in capsys.readouterr().err
