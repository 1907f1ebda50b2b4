"""Bad inputs (broken tables, images and settings): each works, or stops before training with
one `error:` line that names the file, the row or id, and the fix, leaving no run, cache or
submission half-written.

Every hostile or careless input the project handles, and the test that shows it (a FAILING case
here is `FAILING[...]`; test_the_table_names_tests_that_exist keeps the table true). The README's
"Reliability" section says what is promised.

| input | what happens | test |
| --- | --- | --- |
| missing, empty, truncated, corrupt or non-image file | error naming file and id; --skip-bad-images | FAILING[missing train image], FAILING[zero-byte image], FAILING[truncated image], FAILING[corrupt image data], FAILING[text file as image], FAILING[missing test image], FAILING[unreadable test image] |
| image whose header claims 900 megapixels | check, train: error naming it; init: named, goes on | FAILING[decompression bomb], test_a_decompression_bomb_is_named_by_init_which_goes_on |
| images under another extension | error naming the file found instead | FAILING[images with another extension] |
| odd modes, sizes, JPEG named .png, transparency | decoded by content, composited on white | test_odd_images_still_load |
| corrupt zip, corrupt zip member | error naming zip and member | test_a_corrupt_zip_is_named, test_a_corrupt_zip_member_is_named |
| zip member over the size limit (a zip bomb) | refused by declared size, memory unchanged | test_a_zip_bomb_csv_is_refused_before_it_is_read, test_a_csv_over_the_size_limit_is_refused_naming_the_member_and_the_limit |
| zip member lying about its size | stopped at the declared size (CRC), named | test_a_zip_member_that_lies_about_its_size_is_stopped |
| zip member named `../x` or `/x` | never read, warned | test_zip_members_named_with_dotdot_or_absolute_paths_are_never_read |
| symbolic link out of the data folder | not followed, error naming it | test_a_link_out_of_the_data_folder_is_not_followed, test_a_linked_data_folder_still_works |
| duplicate ids, missing or doubled columns, extra fields, unterminated quote | error naming file and line | FAILING[duplicate ids], FAILING[missing label column], FAILING[a column twice in the header], FAILING[extra field in a row], FAILING[unterminated quote] |
| empty or header-only CSV | error | FAILING[empty csv], FAILING[header-only csv] |
| CSV in another encoding, `;` separators, quotes, spaces | read the same | test_csvs_in_other_encodings_read_the_same, test_semicolon_csvs_quotes_and_whitespace_are_understood |
| ids `007` and `7` | kept apart, unchanged in the submission | test_ids_with_leading_zeros_stay_strings, test_leading_zero_test_ids_reach_the_submission_unchanged |
| id with `..`, absolute path, control characters | refused | FAILING[path traversal id], test_ids_may_be_relative_paths_but_never_leave_the_image_folder |
| missing labels, a single class, classes too small for the split | error, or a note | FAILING[nan labels], FAILING[a single class], FAILING[hold-out too small for the classes], test_a_class_with_a_single_image_trains |
| labels `1` and `01` (or `cat` and `Cat`) | warned, naming both spellings | test_one_label_spelled_two_ways_is_warned_of |
| empty class folder, or one holding only hidden files | init, check, train warn naming it | test_empty_class_folders_are_named_by_init_check_and_train |
| test data with a label column, sample vs test ids, sample without the label | error naming both files | FAILING[label column in test data], FAILING[sample ids differ from test ids], FAILING[sample without the label column] |
| competition name with `../` | refused | test_a_competition_name_cannot_climb_out_of_the_workspace |
| yaml setting naming a file outside the data folder | refused at load, naming the setting | test_settings_naming_files_outside_the_data_folder_are_refused |
| `image_size: 100000` (the decoded store) | refused at load | test_an_image_size_no_store_could_hold_is_refused |
| a `kaggle:` slug like `../../x` (the download is saved as SLUG.zip) | refused at load | test_a_kaggle_slug_that_would_name_a_path_is_refused |
| weights file outside the weights folder | refused | test_weights_outside_the_weights_folder_are_refused |
| unreadable or pickled-model weights file | error without weights_only advice, no run folder | test_an_unreadable_weights_file_leaves_no_run_folder_and_no_unsafe_advice |
| unknown or ill-typed setting, broken template, channels 65, channels 4 of photos | error naming the key; photos: each image named with why | test_a_bad_yaml_setting_is_refused_before_anything_is_written, test_a_broken_image_template_is_named, test_channels_beyond_gray_or_rgb_need_bands_photos_lack |
| test inputs changed after training | predict refuses, old submission kept | test_predict_refuses_changed_test_inputs_and_keeps_the_old_submission |
| two first commands at once (digits written) | one writes, the other waits | test_two_first_commands_write_the_digits_competition_once |
| two commands decoding the same images | one decodes, the other waits and reads | test_a_second_decoding_of_the_same_images_waits_and_reads_the_first |
| two `train --resume` of one run | the second refused in one line | test_two_resumes_of_one_run_cannot_both_write_it |
| power cut during a write | fsync before the rename | test_atomic_writes_reach_the_disk_before_the_rename |
| upload that kaggle did not take (exit 0, or no output) | nothing recorded, a useful line | test_an_upload_missing_from_the_list_read_back_is_not_recorded |
| kaggle refusals: credentials, rules, daily limit, 429, no network | the fix for each, nothing recorded | test_a_failed_upload_says_what_to_do_and_changes_nothing |
"""
import json
import re
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compete.cli import main
from compete.config import load_competition
from compete.data import load_train
from compete.files import DataDir

from helpers import assert_nothing_half_written, image_bytes, make_competition, put_file, read_file


def train_csv(tiny) -> str:
    return read_file(tiny, "train.csv").decode()


def replace_row(tiny, old: str, new: str):
    put_file(tiny, "train.csv", train_csv(tiny).replace(f"\n{old}\n", f"\n{new}\n").encode())


def jpeg() -> bytes:
    return image_bytes(Image.new("RGB", (8, 8), (90, 90, 90)), "JPEG")


def huge_png_header() -> bytes:
    """A few bytes claiming a 30000 x 30000 PNG, which would decode to 900 megapixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    size = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", size) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def csv_bytes(rows: dict) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode()


# name -> (change to a good tiny competition, fragments the error must contain)
FAILING = {
    "missing train image": (lambda t: put_file(t, "train/5.png", None),
                            ["train/5.png", "ids '5'", "--skip-bad-images"]),
    "missing test image": (lambda t: put_file(t, "test/50.png", None),
                           ["test/50.png", "ids '50'", "needed for the submission"]),
    "zero-byte image": (lambda t: put_file(t, "train/5.png", b""),
                        ["train/5.png", "id '5'", "empty file (0 bytes)", "Download them again"]),
    "truncated image": (lambda t: put_file(t, "train/5.png", read_file(t, "train/5.png")[:40]),
                        ["train/5.png", "id '5'", "truncated or damaged"]),
    "corrupt image data": (lambda t: put_file(t, "train/5.png", read_file(t, "train/5.png")[:60] + bytes(30)
                                              + read_file(t, "train/5.png")[90:]),
                           ["train/5.png", "id '5'", "broken data stream"]),
    "text file as image": (lambda t: put_file(t, "train/5.png", b"<html>404</html>"),
                           ["train/5.png", "id '5'", "not an image file"]),
    "decompression bomb": (lambda t: put_file(t, "train/5.png", huge_png_header()),
                           ["train/5.png", "id '5'", "exceeds limit", "decompression bomb"]),
    "unreadable test image": (lambda t: put_file(t, "test/50.png", b""),
                              ["test/50.png", "id '50'", "needed for the submission"]),
    "images with another extension": (
        lambda t: [put_file(t, f"train/{i}.png", None) or put_file(t, f"train/{i}.jpg", jpeg())
                   for i in t.train["id"]],
        ["48 training image(s) not found", "train/1.png", "Found train/1.jpg", "image_template"]),
    "duplicate ids": (lambda t: put_file(t, "train.csv", (train_csv(t) + "3,0\n").encode()),
                      ["train.csv", "id '3'", "lines 4, 50", "Remove the duplicate rows"]),
    "missing label column": (lambda t: put_file(t, "train.csv", train_csv(t).replace("label", "target").encode()),
                             ["train.csv", "missing column(s) 'label'", "'target'", "label_column"]),
    "empty csv": (lambda t: put_file(t, "train.csv", b""), ["train.csv is empty", "download it again"]),
    "header-only csv": (lambda t: put_file(t, "train.csv", b"id,label\n"), ["train.csv has a header but no rows"]),
    "label column in test data": (
        lambda t: put_file(t, "test.csv", csv_bytes({"id": t.test_ids, "label": "0"})),
        ["test.csv has a 'label' column", "test_csv"]),
    "sample ids differ from test ids": (
        lambda t: put_file(t, "sample_submission.csv", csv_bytes({"id": t.test_ids[:-1] + ["999"], "label": "0"})),
        ["sample_submission.csv does not match", "test.csv", "'60'", "'999'"]),
    "sample without the label column": (
        lambda t: put_file(t, "sample_submission.csv", csv_bytes({"id": t.test_ids, "target": "0"})),
        ["sample_submission.csv has columns 'id', 'target'", "label_column"]),
    "nan labels": (lambda t: [replace_row(t, "4,0", "4,NaN"), replace_row(t, "7,0", "7,")],
                   ["train.csv line(s) 5, 8", "id '4'", "missing label", "2 row(s)"]),
    "path traversal id": (lambda t: replace_row(t, "5,1", "../x,1"),
                          ["train.csv line(s) 6", "'../x'", "does not name a file inside the image folder"]),
    "extra field in a row": (lambda t: replace_row(t, "5,1", "5,1,oops"),
                             ["train.csv is not a valid CSV", "line 6"]),
    "a column twice in the header": (
        lambda t: put_file(t, "train.csv", ("id, id ,label\n" + "".join(
            f"{i},{i},{label}\n" for i, label in zip(t.train["id"], t.train["label"]))).encode()),
        ["train.csv: column 'id' appears twice"]),
    "unterminated quote": (lambda t: put_file(t, "train.csv", (train_csv(t) + '49,"2\n').encode()),
                           ["train.csv is not a valid CSV", "EOF inside string"]),
    "a single class": (lambda t: put_file(t, "train.csv", csv_bytes({"id": t.train["id"], "label": "0"})),
                       ["train.csv", "every row has the label '0'", "at least two classes"]),
    "hold-out too small for the classes": (
        lambda t: put_file(t, "train.csv", csv_bytes({"id": [str(i) for i in range(1, 9)],
                                                      "label": [str(i % 6) for i in range(1, 9)]})),
        ["val_fraction=0.25", "--set val_fraction", "--folds"]),
}


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize("case", FAILING)
def test_bad_input_stops_training_with_a_clear_error(workspace, capsys, case, zipped):
    change, fragments = FAILING[case]
    tiny = make_competition(workspace, zipped=zipped)
    change(tiny)
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    message = err[err.index("error: "):]
    assert "Traceback" not in err and message.count("\n") == 1
    for fragment in fragments:
        assert fragment in message
    assert_nothing_half_written(workspace, tiny.name)
    # `check` reports the very same problem
    assert main(["check", tiny.name]) == 1
    assert message[len("error: "):].strip() in capsys.readouterr().out


def test_a_corrupt_zip_is_named(workspace, capsys):
    tiny = make_competition(workspace, zipped=True)
    (tiny.data_dir / "train.zip").write_bytes(b"PK\x03\x04 cut short")
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "train.csv not found" in err and "train.zip (File is not a zip file)" in err


def test_a_corrupt_zip_member_is_named(workspace, capsys):
    tiny = make_competition(workspace, zipped=True)
    archive = (tiny.data_dir / "train.zip").read_bytes()
    start = archive.index(b"train/5.png") + len("train/5.png")
    damaged = archive[:start] + bytes(b ^ 0xFF for b in archive[start:start + 20]) + archive[start + 20:]
    (tiny.data_dir / "train.zip").write_bytes(damaged)
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    assert "train.zip:train/5.png (id '5')" in capsys.readouterr().err


def test_unknown_competition_names_the_yaml_to_write(workspace, capsys):
    assert main(["train", "no_such_thing", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Unknown competition 'no_such_thing'" in err and "competition/no_such_thing.yaml" in err


def test_predict_without_a_trained_run_says_what_to_do(workspace, capsys):
    tiny = make_competition(workspace)
    assert main(["predict", tiny.name, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"No trained run for '{tiny.name}'" in err and f"./run.sh train {tiny.name}" in err
    assert_nothing_half_written(workspace, tiny.name)


@pytest.mark.slow
def test_predict_refuses_changed_test_inputs_and_keeps_the_old_submission(workspace, capsys):
    tiny = make_competition(workspace)
    assert main(["train", tiny.name, "--device", "cpu", "--epochs", "1"]) == 0
    assert main(["predict", tiny.name, "--device", "cpu"]) == 0
    submission = workspace / "submissions" / tiny.name / "submission.csv"
    good = submission.read_bytes()
    put_file(tiny, "test/52.png", b"garbage")
    assert main(["predict", tiny.name, "--device", "cpu"]) == 2
    assert "test/52.png (id '52')" in capsys.readouterr().err
    put_file(tiny, "test/52.png", read_file(tiny, "test/53.png"))
    put_file(tiny, "sample_submission.csv", csv_bytes({"id": tiny.test_ids + ["61"], "label": "0"}))
    assert main(["predict", tiny.name, "--device", "cpu"]) == 2
    assert "sample id(s) not in the test set: '61'" in capsys.readouterr().err
    assert submission.read_bytes() == good
    assert not [p for p in submission.parent.iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_skip_bad_images_trains_without_them_and_counts_them(workspace, capsys):
    tiny = make_competition(workspace)
    put_file(tiny, "train/5.png", b"")
    put_file(tiny, "train/9.png", None)
    assert main(["train", tiny.name, "--device", "cpu", "--epochs", "1", "--skip-bad-images"]) == 0
    out = capsys.readouterr().out
    assert "Skipping 2 unreadable training image(s)" in out and "'5' (empty file (0 bytes))" in out
    assert "46 training images (2 unreadable skipped)" in out
    summary = next((workspace / "submissions" / tiny.name / "runs").glob("*/summary.json"))
    assert json.loads(summary.read_text())["skipped_images"] == 2


def load(tiny):
    return load_train(load_competition(tiny.name), DataDir(tiny.data_dir))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252", "utf-16"])
def test_csvs_in_other_encodings_read_the_same(workspace, encoding):
    tiny = make_competition(workspace, classes=("a", "b", "café"))
    put_file(tiny, "train.csv", train_csv(tiny).encode(encoding))
    assert load(tiny).tables.classes == ["a", "b", "café"]


def test_semicolon_csvs_quotes_and_whitespace_are_understood(workspace):
    tiny = make_competition(workspace)
    text = train_csv(tiny).replace("\n5,1\n", '\n"5", 1 \n').replace("\n6,2\n", "\n 6 ,\t2\n")
    put_file(tiny, "train.csv", text.replace(",", ";").encode())
    dataset = load(tiny)
    assert dataset.tables.train_ids[4:6] == ["5", "6"] and dataset.tables.train_labels[4:6] == ["1", "2"]
    assert dataset.tables.classes == ["0", "1", "2"]


def test_ids_with_leading_zeros_stay_strings(workspace):
    tiny = make_competition(workspace)
    put_file(tiny, "train/007.png", read_file(tiny, "train/1.png"))  # a second image, not image 7
    put_file(tiny, "train.csv", (train_csv(tiny) + "007,1\n").encode())
    dataset = load(tiny)
    assert dataset.tables.train_ids[-1] == "007" and "7" in dataset.tables.train_ids
    assert np.array_equal(dataset.train_images[-1], dataset.train_images[0])
    assert not np.array_equal(dataset.train_images[-1], dataset.train_images[6])


def test_odd_images_still_load(workspace):
    tiny = make_competition(workspace, channels=3)
    put_file(tiny, "train/1.png", jpeg())  # a JPEG named .png: the content decides
    put_file(tiny, "train/2.png", image_bytes(Image.new("RGBA", (20, 11), (9, 9, 9, 0))))  # other size and mode, transparent
    dataset = load(tiny)
    assert dataset.train_images.shape == (48, 8, 8, 3)
    assert (dataset.train_images[1] == 255).all() and abs(int(dataset.train_images[0].mean()) - 90) <= 2


@pytest.mark.slow
def test_a_class_with_a_single_image_trains(workspace, capsys):
    tiny = make_competition(workspace)
    replace_row(tiny, "5,1", "5,lonely")
    assert main(["train", tiny.name, "--device", "cpu", "--epochs", "1"]) == 0
    assert main(["check", tiny.name]) == 0
    out = capsys.readouterr().out  # noted when training starts, and by check
    assert out.count("1 class(es) have fewer than 4 images, too few for the val_fraction 0.25 "
                     "hold-out") == 2 and out.count("lonely (1).") == 2


def test_a_competition_name_cannot_climb_out_of_the_workspace(workspace, capsys):
    (workspace / "x.yaml").write_text("channels: 1\n")
    assert main(["check", "../x"]) == 2
    assert "Competition name '../x'" in capsys.readouterr().err


@pytest.mark.slow
def test_leading_zero_test_ids_reach_the_submission_unchanged(workspace):
    tiny = make_competition(workspace, n_test=4)
    padded = [f"00{i}" for i in tiny.test_ids]
    for old, new in zip(tiny.test_ids, padded):
        put_file(tiny, f"test/{new}.png", read_file(tiny, f"test/{old}.png"))
        put_file(tiny, f"test/{old}.png", None)
    put_file(tiny, "test.csv", csv_bytes({"id": padded}))
    put_file(tiny, "sample_submission.csv", csv_bytes({"id": padded, "label": "0"}))
    assert main(["train", tiny.name, "--device", "cpu", "--epochs", "1"]) == 0
    assert main(["predict", tiny.name, "--device", "cpu"]) == 0
    lines = (workspace / "submissions" / tiny.name / "submission.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["id"] + padded


def test_a_broken_image_template_is_named(workspace, capsys):
    tiny = make_competition(workspace, image_template="{ID}.png")
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    assert "image_template '{ID}.png' in competition/tiny.yaml" in capsys.readouterr().err


def test_channels_beyond_gray_or_rgb_need_bands_photos_lack(workspace, capsys):
    tiny = make_competition(workspace, channels=1)
    yaml_path = workspace / "competition" / "tiny.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("channels: 1", "channels: 4"))
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    assert "a photo gives gray or RGB, not 4 channels: use a multi-band TIFF or channel_files" in \
        capsys.readouterr().err
    yaml_path.write_text(yaml_path.read_text().replace("channels: 4", "channels: 65"))
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    assert "channels: 65 must be a number of channels from 1 to 64" in capsys.readouterr().err


def test_the_table_names_tests_that_exist():
    """Every test the table above names is defined in tests/ (and every FAILING case it names exists)."""
    from helpers import REPO
    sources = "".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    rows = [line for line in __doc__.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 30
    for row in rows:
        for name in (part.strip() for part in row.rstrip(" |").rsplit("|", 1)[1].split(", ")):
            case = re.fullmatch(r"FAILING\[(.+)\]", name)
            assert (case[1] in FAILING) if case else f"def {name}(" in sources, name
