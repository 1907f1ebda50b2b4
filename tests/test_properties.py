"""Property-based: generated CSVs, image files and samples never end in an unexplained traceback
and never in a malformed submission. Each input either works or raises one PipelineError."""
import contextlib
import io
import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st
from PIL import Image

from compete.cli import main
from compete.config import load_competition
from compete.errors import PipelineError
from compete.data import load_images
from compete.files import DataDir, Problems
from compete.layout import unsafe_ids
from compete.tables import MISSING_LABELS, load_tables
from compete.submission import build_submission, validate_submission, write_submission

from helpers import image_bytes, make_competition, workspace_at

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", 40))  # raise it to hunt for bugs at length
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COUNTER = itertools.count()

# Cells as a hostile download might have them: leading zeros, quotes, commas, spaces, paths,
# spellings of missing values, non-ASCII, control characters.
CELL = st.one_of(
    st.sampled_from(["007", "7", "0", " 1 ", '"q"', "a,b", "../x", "x/y", "..", "nan", "NA", "",
                     "café", "ß", "tab\there", "line\nbreak", "日本"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6))
PLAIN_ID = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                   min_size=1, max_size=8).map(str.strip).filter(
                       lambda s: s and s not in (".", "..") and "/" not in s and "\\" not in s)
GOOD_ID = st.one_of(st.integers(0, 10**6).map(str), st.integers(0, 999).map("{:05d}".format),
                    PLAIN_ID.map(lambda s: f" {s} "))
GOOD_LABEL = st.sampled_from(["cat", " dog ", "007", "7", "café", "日本", "a,b", '"q"'])


@st.composite
def rows(draw):
    """Mostly well-formed (id, label) rows, sometimes with one hostile cell put in."""
    table = draw(st.lists(st.tuples(GOOD_ID, GOOD_LABEL), min_size=draw(st.sampled_from([0, 4])),
                          max_size=12, unique_by=lambda r: r[0].strip()))
    if table and draw(st.booleans()):
        row, column = draw(st.integers(0, len(table) - 1)), draw(st.integers(0, 1))
        table[row] = tuple(draw(CELL) if c == column else cell for c, cell in enumerate(table[row]))
    return table


ROWS = rows()
ENCODING = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"])


def csv_text(header, rows, delimiter=","):
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=header).to_csv(buffer, index=False, sep=delimiter)
    return buffer.getvalue()


def encode(text, encoding):
    return text.encode(encoding, errors="replace") if encoding == "cp1252" else text.encode(encoding)


@pytest.fixture(scope="module")
def tables_root(tmp_path_factory):
    """A workspace holding a competition yaml; each example writes its own data folder."""
    root = tmp_path_factory.mktemp("tables")
    with workspace_at(root):
        make_competition(root, "gen", n_train=4, n_test=2)
        yield root


def fresh_folder(root, files: dict) -> DataDir:
    folder = root / "generated" / str(next(COUNTER))
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return DataDir(folder)


@pytest.mark.slow
@SETTINGS
@given(train=ROWS, test=st.one_of(st.lists(GOOD_ID, min_size=1, max_size=6, unique_by=str.strip),
                                st.lists(CELL, max_size=6)), encoding=ENCODING,
       delimiter=st.sampled_from([",", ";", "\t"]), label_in_test=st.sampled_from([False, False, True]),
       header=st.sampled_from([["id", "label"]] * 3 + [[" id ", "label "], ["ID", "label"], ["id", "id"],
                                                       ["id", " id"], ["label", "id"]]))
def test_generated_csvs_load_cleanly_or_explain_why(tables_root, train, test, encoding, delimiter,
                                                   label_in_test, header):
    files = {"train.csv": encode(csv_text(header, train, delimiter), encoding),
             "test.csv": encode(csv_text(["id", "label"] if label_in_test else ["id"],
                                         [(i, "0") if label_in_test else (i,) for i in test]), encoding),
             "sample_submission.csv": csv_text(["id", "label"], [(i, "0") for i in test]).encode()}
    data = fresh_folder(tables_root, files)
    comp = load_competition("gen")
    collected = Problems(collect=True)
    load_tables(comp, data, collected)  # the collecting path never raises
    try:
        tables = load_tables(comp, data)
    except PipelineError as error:
        assert collected.found and str(error) == collected.found[0]  # both paths say the same
        event(f"refused: {str(error).split(data.root.name)[-1][:60]}")
        return
    event("loaded")
    assert not collected.found
    ids = pd.Series(tables.train_ids)
    assert ids.is_unique and (ids != "").all() and not unsafe_ids(ids).any()
    assert not set(tables.train_labels) & MISSING_LABELS and len(tables.classes) >= 2
    assert sorted(tables.classes) == sorted(set(tables.train_labels))
    assert set(tables.test_ids) == set(data.read_csv("test.csv")["id"])


def good_png(kind: str, side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (side, side), dtype=np.uint16))
    else:
        base = Image.fromarray(rng.integers(0, 255, (side, side, 4), dtype=np.uint8), "RGBA")
        image = base.convert(kind)
    return image_bytes(image)


IMAGE = st.builds(good_png, st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]),
                  st.integers(1, 20), st.integers(0, 1000))


@st.composite
def damaged(draw):
    raw = draw(IMAGE)
    how = draw(st.sampled_from(["truncate", "flip", "garbage", "empty"]))
    at = draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
    return b"" if how == "empty" else draw(st.binary(max_size=64))


@SETTINGS
@given(images=st.lists(st.one_of(IMAGE.map(lambda raw: (raw, True)), damaged().map(lambda raw: (raw, False))),
                       min_size=1, max_size=4),
       channels=st.sampled_from([1, 3]))
def test_generated_images_decode_or_are_named(tables_root, images, channels):
    data = fresh_folder(tables_root, {})
    (data.root / "img").mkdir()
    ids = [f"0{i}" for i in range(len(images))]
    for image_id, (raw, _) in zip(ids, images):
        (data.root / "img" / f"{image_id}.png").write_bytes(raw)
    comp = load_competition("gen")
    comp.channels, comp.name = channels, f"gen{next(COUNTER)}"
    collected = Problems(collect=True)
    decoded = load_images(comp, data, "img", ids, "train", problems=collected)
    assert decoded.images.shape == (len(ids), 8, 8, channels) and decoded.images.dtype == np.uint8
    for row, (raw, intact) in enumerate(images):
        if intact:
            assert row not in decoded.bad  # a valid PNG of any mode is never refused
        if row in decoded.bad:
            assert f"img/{ids[row]}.png (id {ids[row]!r})" in collected.found[0]
    assert bool(decoded.bad) == bool(collected.found)
    event(f"{len(decoded.bad)} of {len(ids)} refused")


@SETTINGS
@given(ids=st.lists(PLAIN_ID, min_size=1, max_size=10, unique=True),
       classes=st.lists(PLAIN_ID, min_size=2, max_size=4, unique=True),
       probabilities_format=st.booleans(), seed=st.integers(0, 100))
def test_written_submissions_read_back_exactly(tmp_path_factory, ids, classes, probabilities_format, seed):
    sample = pd.DataFrame({"id": ids})
    if probabilities_format:
        for name in classes:
            sample[name] = "0"
    else:
        sample["label"] = classes[0]
    if probabilities_format and "id" in classes:
        return  # a class named like the id column cannot be a column of its own
    probs = np.random.default_rng(seed).dirichlet(np.ones(len(classes)), size=len(ids))
    out = tmp_path_factory.mktemp("sub")
    frame = build_submission(sample, "id", "label", classes, probs)
    validate_submission(frame, sample, "id", "label", classes)
    path = write_submission(frame, out)
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(back.columns) == list(sample.columns) and back["id"].tolist() == ids
    if probabilities_format:
        assert np.allclose(back[classes].astype(float).to_numpy(), probs)
    else:
        assert back["label"].tolist() == [classes[i] for i in probs.argmax(1)]
    assert all(p.name.startswith("submission") for p in out.iterdir())  # no temporary files left


# What each edit of a 12-row sample (test ids 49..60) does to `predict`, with and without a
# test.csv beside it: None = a submission is written; else a fragment of the one error line,
# which names the file and the offending id.
SAMPLE_EDITS = {
    "keep": (None, None), "shuffle": (None, None), "spaces": (None, None),
    "extra column": (None, None), "class columns": (None, None),
    "drop": ("1 test id(s) missing from the sample: '49'", None),  # the sample alone may list fewer
    "duplicate": ("sample_submission.csv: id '49' appears on lines 2, 14",) * 2,
    "unknown": ("1 sample id(s) not in the test set: '999'", "test/999.png not found"),
    "zero-pad": ("sample id(s) not in the test set: '049'", "test/049.png not found"),
    "path": ("sample_submission.csv line(s) 2, 3, 4, 5, 6 and 7 more: id '../49' does not name a file",) * 2,
}
EDITS = list(SAMPLE_EDITS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny competition trained once (one epoch); examples only change its test-side files."""
    root = tmp_path_factory.mktemp("trained")
    with workspace_at(root):
        tiny = make_competition(root, classes=("a", "b", "c"))
        assert main(["train", tiny.name, "--device", "cpu", "--epochs", "1"]) == 0
        yield root, tiny


def predict_with(root, tiny, sample: pd.DataFrame, test_csv: bool) -> tuple[int, str, Path]:
    """`predict` on a copy of the data with `sample` as sample_submission.csv (and test.csv
    removed unless `test_csv`): the exit status, the error output and the submission's path."""
    data = root / "gen" / str(next(COUNTER))
    shutil.copytree(tiny.data_dir, data)
    sample.to_csv(data / "sample_submission.csv", index=False)
    if not test_csv:
        os.remove(data / "test.csv")
    target = root / "submissions" / tiny.name / "submission.csv"
    target.unlink(missing_ok=True)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        status = main(["predict", tiny.name, "--device", "cpu", "--data", str(data)])
    return status, errors.getvalue(), target


def assert_written_like(target: Path, sample: pd.DataFrame) -> None:
    """The submission has the sample's header and its ids in its order, and training classes."""
    written = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert list(written.columns) == [str(c).strip() for c in sample.columns]
    assert written["id"].tolist() == [str(i).strip() for i in sample["id"]]
    if "label" in written:
        assert set(written["label"]) <= {"a", "b", "c"}


@pytest.mark.slow
@pytest.mark.parametrize("test_csv", [True, False], ids=["with test.csv", "sample alone"])
@pytest.mark.parametrize("edit", EDITS)
def test_each_sample_edit_is_predicted_or_refused_by_name(trained, edit, test_csv):
    root, tiny = trained
    sample = edit_sample(pd.DataFrame({"id": tiny.test_ids, "label": "a"}), edit, np.random.default_rng(0))
    status, errors, target = predict_with(root, tiny, sample, test_csv)
    refusal = SAMPLE_EDITS[edit][0 if test_csv else 1]
    if refusal is None:
        assert status == 0, errors
        assert_written_like(target, sample)
    else:
        assert status == 2 and not target.exists()
        assert errors.count("error:") == 1 and refusal in errors, errors


def offending_ids(sample: pd.DataFrame, test_ids: list, test_csv: bool) -> set:
    """The ids (as the pipeline strips them) a prediction must refuse to write: paths, duplicates,
    ids without a test image, and, beside a test.csv, test ids the sample lacks. Empty: valid."""
    ids = [str(i).strip() for i in sample["id"]]
    paths = {i for i in ids if "/" in i or ".." in i}
    duplicates = {i for i in ids if ids.count(i) > 1}
    missing = set(test_ids) - set(ids) if test_csv else set()
    return paths | duplicates | (set(ids) - set(test_ids)) | missing


@pytest.mark.slow
@settings(max_examples=max(EXAMPLES // 3, 5), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.sampled_from(EDITS), min_size=1, max_size=3), test_csv=st.booleans(),
       seed=st.integers(0, 99))
@example(edits=["class columns", "extra column"], test_csv=False, seed=0)  # a Usage column beside them
def test_edited_samples_are_predicted_or_refused_by_name(trained, edits, test_csv, seed):
    root, tiny = trained
    rng = np.random.default_rng(seed)
    sample = pd.DataFrame({"id": tiny.test_ids, "label": "a"})
    for edit in edits:
        sample = edit_sample(sample, edit, rng)
    status, errors, target = predict_with(root, tiny, sample, test_csv)
    offending = offending_ids(sample, tiny.test_ids, test_csv)
    if offending:
        event("refused")
        assert status == 2 and not target.exists()
        assert any(f"'{i}'" in errors for i in offending), errors  # names one of them
    else:
        event("written")
        assert status == 0, errors
        assert_written_like(target, sample)


def edit_sample(sample, edit, rng):
    if edit == "drop" and len(sample) > 1:
        return sample.iloc[1:]
    if edit == "duplicate":
        return pd.concat([sample, sample.iloc[:1]])
    if edit == "unknown":
        return pd.concat([sample, pd.DataFrame({"id": ["999"], "label": "a"})])
    if edit == "shuffle":
        return sample.iloc[rng.permutation(len(sample))]
    if edit == "zero-pad":
        return sample.assign(id="0" + sample["id"])
    if edit == "spaces":
        return sample.assign(id=" " + sample["id"] + " ")
    if edit == "extra column":
        return sample.assign(Usage="Public")
    if edit == "class columns":
        return pd.DataFrame({"id": sample["id"], "c": 0.0, "a": 0.0, "b": 0.0})
    if edit == "path":
        return sample.assign(id="../" + sample["id"])
    return sample
