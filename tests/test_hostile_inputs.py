"""Hostile inputs, round 2 (issue 23): races between two commands, paths and sizes that files and
settings claim, uploads that did not happen. The table of every hostile input is in
test_bad_inputs.py's docstring; each case here is one of its rows."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from threading import Thread

import pytest
import yaml

from compete import atomic
from compete.cli import main
from compete.config import load_competition
from compete.data import load_train
from compete.files import DataDir

from helpers import (TINY_PRESET, cli_process, compete_env, decode_calls, make_competition, only_run,
                      put_file, read_file, resident_bytes)
from test_bad_inputs import huge_png_header, replace_row, train_csv
from test_layouts import class_folder_download


def set_yaml(workspace, name: str, **values) -> None:
    path = workspace / "competition" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


# --- two commands at once ---------------------------------------------------------------------

def test_two_first_commands_write_the_digits_competition_once(workspace):
    code = "from compete.files import data_dir; data_dir('digits', None)"
    processes = [subprocess.Popen([sys.executable, "-c", code], env=compete_env(workspace),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(3)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert sum("Wrote the embedded digits competition" in output for output in outputs) == 1
    inputs = workspace / "inputs"
    assert sorted(p.name for p in inputs.iterdir() if ".tmp" in p.name) == []  # nothing half-written
    assert len(list((inputs / "digits" / "train").iterdir())) + len(list((inputs / "digits" / "test").iterdir())) == 1797


def test_a_second_decoding_of_the_same_images_waits_and_reads_the_first(workspace, monkeypatch):
    tiny = make_competition(workspace)
    calls = decode_calls(monkeypatch)
    comp, data = load_competition(tiny.name), DataDir(tiny.data_dir)
    load_train(comp, data)  # decodes train and test into the cache
    assert len(calls) == 2
    cache = workspace / "inputs" / ".cache" / tiny.name
    [lock] = cache.glob("train-*.lock")  # taken while decoding the training images
    entries = {path: path.read_bytes() for path in cache.glob("*.npy")}
    for path in entries:  # as if another command were decoding them right now
        path.unlink()
    other = os.open(lock, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    second = Thread(target=load_train, args=(comp, data))
    second.start()
    time.sleep(1.0)
    assert second.is_alive() and len(calls) == 2  # waits instead of decoding them too
    for path, content in entries.items():  # the other command finishes
        path.write_bytes(content)
    os.close(other)
    second.join(60)
    assert not second.is_alive() and len(calls) == 2  # and reads what it wrote


@pytest.mark.slow
def test_two_resumes_of_one_run_cannot_both_write_it(workspace):
    tiny = make_competition(workspace, preset={**TINY_PRESET, "members": [{**TINY_PRESET["members"][0], "epochs": 2}]})
    assert main(["train", tiny.name, "--device", "cpu"]) == 0
    run_dir = only_run(workspace, tiny.name)
    (run_dir / "summary.json").unlink()  # an interrupted run, as far as --resume can tell
    first = cli_process(workspace, "train", tiny.name, "--device", "cpu", "--resume")
    lock = run_dir / ".training.lock"
    deadline = time.time() + 120
    while atomic.holder(lock) != str(first.pid) and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # holds the run, mid-command
    try:
        assert atomic.holder(lock) == str(first.pid)
        before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        second = cli_process(workspace, "train", tiny.name, "--device", "cpu", "--resume")
        output, _ = second.communicate(timeout=120)
        assert second.returncode == 2
        message = output[output.index("error: "):]
        assert message.count("\n") == 1 and f"being trained by another process (pid {first.pid})" in message
        assert f"--resume --run {run_dir.name}" in message
        assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    finally:
        first.send_signal(signal.SIGCONT)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert (run_dir / "summary.json").is_file()
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs))  # each epoch logged once
    assert main(["train", tiny.name, "--device", "cpu", "--resume"]) == 2  # finished: nothing to resume


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    atomic.write_atomically(tmp_path / "x.json", lambda file: file.write(b"{}"))
    assert (tmp_path / "x.json").read_bytes() == b"{}"
    assert events == ["fsync", "rename", "fsync"]  # the file, the rename, then the folder


# --- images whose header claims too much ------------------------------------------------------

def test_a_decompression_bomb_is_named_by_init_which_goes_on(workspace, capsys):
    tiny = make_competition(workspace)
    (workspace / "competition" / "tiny.yaml").unlink()
    put_file(tiny, "train/5.png", huge_png_header())
    assert main(["init", tiny.name]) == 0
    out = capsys.readouterr().out
    assert "1 sampled image(s) did not open: train/5.png (" in out and "decompression bomb" in out
    assert (workspace / "competition" / "tiny.yaml").is_file()


# --- settings that name files -----------------------------------------------------------------

@pytest.mark.parametrize("setting,value", [
    ("test_template", "../../../../tmp/x/{id}.png"),
    ("sample_submission", "../../../../etc/passwd"),
    ("train_csv", "/etc/passwd"),
    ("test_csv", "C:\\data\\test.csv"),
    ("train_images", "../elsewhere"),
    ("image_template", "{id}/../../../x.png"),
])
def test_settings_naming_files_outside_the_data_folder_are_refused(workspace, capsys, setting, value):
    tiny = make_competition(workspace)
    set_yaml(workspace, tiny.name, **{setting: value})
    assert main(["check", tiny.name]) == 2
    err = error_line(capsys)
    assert f"{setting}: {value!r} leaves the competition's data folder" in err and "tiny.yaml" in err


def test_an_image_size_no_store_could_hold_is_refused(workspace, capsys):
    tiny = make_competition(workspace)
    set_yaml(workspace, tiny.name, image_size=100_000)  # main: a MemoryError traceback, or worse
    assert main(["check", tiny.name]) == 2
    assert "image_size: 100000 is over 4096 pixels a side" in error_line(capsys)


def test_a_kaggle_slug_that_would_name_a_path_is_refused(workspace, capsys):
    tiny = make_competition(workspace, kaggle="../../../tmp/evil")  # the download lands as SLUG.zip
    assert main(["download", tiny.name]) == 2
    assert "kaggle: '../../../tmp/evil' is not a competition's slug" in error_line(capsys)


def test_a_link_out_of_the_data_folder_is_not_followed(workspace, tmp_path, capsys):
    tiny = make_competition(workspace)
    outside = tmp_path / "secret.png"
    outside.write_bytes(read_file(tiny, "train/5.png"))
    (tiny.data_dir / "train" / "5.png").unlink()
    (tiny.data_dir / "train" / "5.png").symlink_to(outside)
    assert main(["check", tiny.name]) == 1
    out = capsys.readouterr().out
    assert "train/5.png (id '5')" in out and f"a link to {outside}, outside the data folder" in out


def test_a_linked_data_folder_still_works(workspace, tmp_path):
    tiny = make_competition(workspace)
    moved = tmp_path / "elsewhere"
    tiny.data_dir.rename(moved)
    tiny.data_dir.symlink_to(moved)  # inputs/NAME -> a read-only copy: the README's way
    assert main(["check", tiny.name]) == 0


def test_zip_members_named_with_dotdot_or_absolute_paths_are_never_read(workspace, capsys):
    tiny = make_competition(workspace, zipped=True)
    with zipfile.ZipFile(tiny.data_dir / "train.zip", "a") as archive:
        archive.writestr("../../train.csv", b"id,label\n1,evil\n")
        archive.writestr("/etc/cron.d/x.png", b"x")
    assert load_train(load_competition(tiny.name), DataDir(tiny.data_dir)).tables.classes == ["0", "1", "2"]
    assert main(["check", tiny.name]) == 0
    out = capsys.readouterr().out
    assert "train.zip:../../train.csv: a zip member named with '..'" in out and "train.zip:/etc/cron.d/x.png" in out
    assert not (workspace / "train.csv").exists()


# --- sizes that files claim -------------------------------------------------------------------

def big_csv(rows: int) -> bytes:
    return b"id,label\n" + b"".join(b"%d,%d\n" % (i, i % 3) for i in range(1, rows + 1))


def test_a_csv_over_the_size_limit_is_refused_naming_the_member_and_the_limit(workspace, monkeypatch, capsys):
    monkeypatch.setenv("COMPETE_MAX_FILE_MB", "1")
    tiny = make_competition(workspace, zipped=True)
    put_file(tiny, "train.csv", big_csv(200_000))  # 1.6 MB, a few kB zipped
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    err = error_line(capsys)
    assert "train.zip:train.csv is 2 MB, over the limit of 1 MB" in err and "COMPETE_MAX_FILE_MB" in err


def test_a_zip_bomb_csv_is_refused_before_it_is_read(workspace, tmp_path, capsys):
    """The issue's case: a small train.zip holding a 1 GiB train.csv; refused by the size it
    declares, with memory unchanged (main read it whole: 6 GB)."""
    tiny = make_competition(workspace, zipped=True)
    header = train_csv(tiny).encode()
    with zipfile.ZipFile(tiny.data_dir / "train.zip") as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name != "train.csv"}
    with zipfile.ZipFile(tiny.data_dir / "train.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        with archive.open("train.csv", "w", force_zip64=True) as member:
            member.write(header)
            block = b"9" * (1 << 20)
            for _ in range(1024):
                member.write(block)
    assert (tiny.data_dir / "train.zip").stat().st_size < 8 << 20
    before = resident_bytes()
    assert main(["check", tiny.name]) == 1
    assert resident_bytes() - before < 200 << 20
    out = capsys.readouterr().out
    assert "train.zip:train.csv is 1024 MB, over the limit of 512 MB" in out


def declare_size(archive: bytes, name: bytes, size: int) -> bytes:
    """The zip with member `name`'s uncompressed size set to `size` in its local header and in
    the central directory (what a hostile zip may claim)."""
    data = bytearray(archive)
    for signature, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        start = data.find(signature)
        while start >= 0:
            if data[start + name_at:start + name_at + len(name)] == name:
                data[start + size_at:start + size_at + 4] = size.to_bytes(4, "little")
            start = data.find(signature, start + 4)
    return bytes(data)


def test_a_zip_member_that_lies_about_its_size_is_stopped(workspace, capsys):
    tiny = make_competition(workspace, zipped=True)
    put_file(tiny, "train.csv", big_csv(300_000))  # 2.4 MB that claim to be 1000 bytes
    path = tiny.data_dir / "train.zip"
    path.write_bytes(declare_size(path.read_bytes(), b"train.csv", 1000))
    assert zipfile.ZipFile(path).getinfo("train.csv").file_size == 1000
    assert main(["check", tiny.name]) == 1
    out = capsys.readouterr().out
    assert "Cannot read" in out and "train.zip:train.csv" in out and "download it again" in out


# --- class folders and labels -----------------------------------------------------------------

def test_empty_class_folders_are_named_by_init_check_and_train(workspace, capsys):
    folder = workspace / "inputs" / "comp"
    class_folder_download(folder)
    (folder / "train" / "wasps").mkdir()
    (folder / "train" / "hornets").mkdir()
    (folder / "train" / "hornets" / ".DS_Store").write_bytes(b"junk")
    assert main(["init", "comp"]) == 0
    assert "2 class folder(s)" in capsys.readouterr().out
    assert main(["check", "comp"]) == 0
    out = capsys.readouterr().out
    assert "warning: 2 class folder(s) in" in out and "hold no image" in out and "hornets, wasps" in out
    load_train(load_competition("comp"), DataDir(folder))  # what train reads
    assert "warning: 2 class folder(s)" in capsys.readouterr().out


def test_one_label_spelled_two_ways_is_warned_of(workspace, capsys):
    tiny = make_competition(workspace)
    replace_row(tiny, "5,1", "5,01")
    assert main(["check", tiny.name]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "the labels '01' and '1' look like one value" in out
    load_train(load_competition(tiny.name), DataDir(tiny.data_dir))
    assert "'01' and '1'" in capsys.readouterr().out


# --- a train refused for its settings ---------------------------------------------------------

@pytest.mark.parametrize("content", [b"not a pickle at all", "pickled model"])
def test_an_unreadable_weights_file_leaves_no_run_folder_and_no_unsafe_advice(workspace, tmp_path, monkeypatch,
                                                                               capsys, content):
    import torch
    monkeypatch.setenv("COMPETE_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    if content == "pickled model":
        torch.save(torch.nn.Linear(2, 2), tmp_path / "weights" / "net.pth")
    else:
        (tmp_path / "weights" / "net.pth").write_bytes(content)
    tiny = make_competition(workspace, preset={"members": [{**TINY_PRESET["members"][0], "weights": "net.pth"}]})
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    err = error_line(capsys)
    assert "net.pth is not a readable state_dict" in err and "weights_only" not in err
    assert not (workspace / "submissions" / tiny.name / "runs").exists() or \
        not list((workspace / "submissions" / tiny.name / "runs").iterdir())
    assert main(["runs", tiny.name]) == 0
    assert "unfinished" not in capsys.readouterr().out
