"""Metadata beside the image (`metadata:` in the yaml): the encoder (numbers, categories, missing
cells, unseen categories), the fusion head of every model kind, check's report, and a
competition only image and metadata together solve, through init -> check -> train -> predict."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from compete import budget, pipeline, predict, train
from compete.cli import main
from compete.config import Member, load_competition
from compete.errors import PipelineError
from compete.metadata import MetadataEncoder
from compete.models import NetSpec, member_model
from compete.runs import load_checkpoint, read_checkpoint, save_checkpoint

from helpers import TINY_PRESET, make_metadata_competition, only_run, run_summary
from test_kernel import SLUG, cannot_cut_network, offline_env

ROWS = pd.DataFrame({"age": ["20", "40", "", "60"], "sex": ["f", "m", "f", ""]})


def test_numbers_are_standardised_and_missing_cells_filled_and_flagged():
    encoder = MetadataEncoder.fit(ROWS[["age"]])
    encoded = encoder.encode(pd.DataFrame({"age": ["40", "", "70"]}))
    std = np.std([20, 40, 60])
    assert encoded.shape == (3, 2) and encoded.dtype == np.float32
    np.testing.assert_allclose(encoded[:, 0], [0.0, 0.0, 30 / std], rtol=1e-6)  # missing: the mean
    assert encoded[:, 1].tolist() == [0.0, 1.0, 0.0]                            # and flagged


def test_categories_are_one_hot_with_a_slot_for_values_never_seen_in_training():
    encoder = MetadataEncoder.fit(ROWS[["sex"]])
    assert encoder.columns[0].categories == ["(missing)", "f", "m"]
    encoded = encoder.encode(pd.DataFrame({"sex": ["m", "x", ""]}))
    assert encoded.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]  # x: the unseen slot


def test_the_encoder_saved_as_json_encodes_alike():
    encoder = MetadataEncoder.fit(ROWS)
    again = MetadataEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert again.features == encoder.features == 2 + 4
    np.testing.assert_array_equal(again.encode(ROWS), encoder.encode(ROWS))


FUSED_MODELS = [("cnn", {"widths": [8, 16], "convs": 1}), ("cnn", {"widths": [8], "pool": "flatten"}),
                ("resnet_small", {"widths": [8, 16, 32]}), ("tv/resnet18", {}),
                ("timm/mobilenetv3_small_050", {})]


@pytest.mark.parametrize("model_name, model_args", FUSED_MODELS)
def test_every_model_kind_reads_metadata_and_round_trips_through_a_checkpoint(tmp_path, model_name, model_args):
    member = Member(model=model_name, model_args=model_args, metadata_hidden=16)
    spec = NetSpec(3, 32, 4, [0.5] * 3, [0.25] * 3, MetadataEncoder.fit(ROWS).to_dict())
    model = member_model(member, spec, torch.device("cpu"), seed=0).eval()
    images, metadata = torch.rand(4, 3, 32, 32), torch.from_numpy(MetadataEncoder.fit(ROWS).encode(ROWS))
    with torch.no_grad():
        logits = model(images, metadata)
        other = model(images, metadata.flip(0))
    assert logits.shape == (4, 4) and torch.isfinite(logits).all()
    assert not torch.allclose(logits, other)  # the metadata reaches the outputs
    path = tmp_path / "members" / "m0_f0.safetensors"
    path.parent.mkdir()
    save_checkpoint(path, model.state_dict(), member, spec, {"epoch": 1})
    loaded, _ = load_checkpoint(path, torch.device("cpu"))
    assert loaded.metadata == spec.metadata  # predict encodes the test rows with the saved encoder
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, metadata), logits, rtol=1e-5, atol=1e-6)


def test_a_model_without_metadata_is_the_one_it_was_before():
    member = Member(model="cnn", model_args={"widths": [8, 16], "convs": 1})
    plain = member_model(member, NetSpec(1, 8, 3, [0.5], [0.25]), torch.device("cpu"), seed=0)
    fused = member_model(member, NetSpec(1, 8, 3, [0.5], [0.25], MetadataEncoder.fit(ROWS).to_dict()),
                         torch.device("cpu"), seed=0)
    assert plain.fusion is None and plain.metadata is None and fused.metadata is not None
    assert not any(key.startswith("fusion") for key in plain.state_dict())
    assert isinstance(plain.net.head[-1], torch.nn.Linear)  # its own classifier, untouched
    shared = {k: v for k, v in fused.state_dict().items() if k in plain.state_dict()}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items() if "head" not in k)


def test_metadata_settings_that_cannot_work_are_refused_on_load(workspace):
    make_metadata_competition(workspace)
    path = workspace / "competition" / "meta.yaml"
    settings = yaml.safe_load(path.read_text())
    for metadata, says in ((["label"], "other than the id and label"), ("temperature", "expected list"),
                           ([3], "list of CSV column"),
                           (["site", "site"], "distinct")):
        path.write_text(yaml.safe_dump({**settings, "metadata": metadata}))
        with pytest.raises(PipelineError, match=says):
            load_competition("meta")


def test_check_reports_the_columns_and_what_is_wrong_with_them(workspace, capsys):
    tiny = make_metadata_competition(workspace)
    assert main(["check", "meta"]) == 0
    out = capsys.readouterr().out
    assert "metadata temperature: numbers" in out and "metadata site: 3 categories" in out
    assert "'moon'" in out and "unseen slot" in out  # a test category never seen in training
    test = pd.read_csv(tiny.data_dir / "test.csv", dtype=str, keep_default_na=False)
    test.loc[0, "temperature"] = "warm"
    test.drop(columns="site").to_csv(tiny.data_dir / "test.csv", index=False)
    assert main(["check", "meta"]) == 1
    out = capsys.readouterr().out
    assert "missing column(s) 'site'" in out
    test.to_csv(tiny.data_dir / "test.csv", index=False)
    assert main(["check", "meta"]) == 1
    assert "'warm' in the test rows" in capsys.readouterr().out


def test_init_lists_the_columns_of_both_csvs_and_proposes_them_commented(workspace, capsys):
    tiny = make_metadata_competition(workspace)
    assert main(["init", "found", "--data", str(tiny.data_dir)]) == 0
    assert "temperature (numbers), site (3 categories)" in capsys.readouterr().out
    text = (workspace / "competition" / "found.yaml").read_text()
    assert "# metadata: [temperature, site]" in text
    assert load_competition("found").metadata == []  # proposed, not on until uncommented


LEARNING_PRESET = {"val_fraction": 0.25, "members": [{
    **TINY_PRESET["members"][0], "epochs": 12, "batch_size": 16, "metadata_hidden": 16}]}


def accuracy(workspace, tiny) -> float:
    submission = pd.read_csv(workspace / "submissions" / tiny.name / "submission.csv", dtype=str)
    return float((submission["label"] == pd.Series(tiny.truth)).mean())


@pytest.mark.slow
def test_a_competition_only_image_and_metadata_together_solve_is_learned(workspace, capsys):
    tiny = make_metadata_competition(workspace, preset=LEARNING_PRESET)
    assert main(["check", "meta"]) == 0
    assert main(["train", "meta", "--device", "cpu"]) == 0
    assert main(["predict", "meta", "--device", "cpu"]) == 0
    with_metadata = accuracy(workspace, tiny)
    path = workspace / "competition" / "meta.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "metadata": []}))
    assert main(["train", "meta", "--device", "cpu"]) == 0
    assert main(["predict", "meta", "--device", "cpu"]) == 0
    image_only = accuracy(workspace, tiny)
    assert with_metadata >= 0.8 and image_only <= 0.7, (with_metadata, image_only)


@pytest.mark.slow
def test_lr_find_folds_refit_and_time_limits_carry_the_metadata_fitted_on_training_rows(workspace, monkeypatch):
    tiny = make_metadata_competition(workspace, n_train=64, n_test=16)
    assert main(["lr-find", "meta", "--device", "cpu"]) == 0
    assert (workspace / "submissions" / "meta" / "lr_find-0.png").is_file()
    for module in (budget, predict):  # each command's clock starts now, not at this process's start
        monkeypatch.setattr(module, "process_seconds", lambda: 0.0)
    assert main(["train", "meta", "--device", "cpu", "--folds", "2", "--refit", "--time-limit", "20"]) == 0
    assert main(["predict", "meta", "--device", "cpu", "--time-limit", "60"]) == 0
    run_dir = only_run(workspace, "meta")
    assert run_summary(run_dir)["refit"]
    temperatures = pd.to_numeric(tiny.train["temperature"].replace("", np.nan))
    validated_by = np.load(run_dir / "oof_folds.npy")
    for fold in (0, 1):  # each fold's encoder: its own training rows, never its validation rows
        saved = read_checkpoint(run_dir / "members" / f"m0_f{fold}.safetensors")["shape"]["metadata"]
        assert saved["columns"][0]["mean"] == pytest.approx(temperatures[validated_by != fold].mean())
    refit = read_checkpoint(run_dir / "members" / "m0_full.safetensors")["shape"]["metadata"]
    assert refit["columns"][0]["mean"] == pytest.approx(temperatures.mean())
    assert len(pd.read_csv(workspace / "submissions" / "meta" / "submission.csv")) == len(tiny.test_ids)


@pytest.mark.slow
@pytest.mark.skipif(cannot_cut_network, reason="unshare -n needs root (or user namespaces)")
def test_the_offline_kernel_reads_the_test_csvs_metadata_and_writes_predicts_submission(workspace, monkeypatch,
                                                                                        tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    tiny = make_metadata_competition(workspace, n_train=64, n_test=16, kaggle=SLUG)
    assert main(["train", "meta", "--device", "cpu", "--epochs", "2"]) == 0
    assert main(["predict", "meta", "--device", "cpu"]) == 0
    assert main(["package", "meta"]) == 0
    inputs, working = tmp_path / "input", tmp_path / "working"
    shutil.copytree(tiny.data_dir, inputs / SLUG, ignore=shutil.ignore_patterns(".cache"))
    shutil.copytree(workspace / "submissions" / "meta" / "kaggle" / "dataset", inputs / "meta-compete-models")
    working.mkdir()
    script = workspace / "submissions" / "meta" / "kaggle" / "kernel" / "compete_kernel.py"
    done = subprocess.run(["unshare", "-n", sys.executable, str(script)], env=offline_env(inputs, working),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = (workspace / "submissions" / "meta" / "submission.csv").read_bytes()
    assert (working / "submission.csv").read_bytes() == expected


@pytest.mark.slow
def test_pseudo_labelled_test_images_bring_their_own_metadata_rows(workspace, monkeypatch):
    tiny = make_metadata_competition(workspace, n_train=48, n_test=16)
    assert main(["train", "meta", "--device", "cpu"]) == 0
    teacher = only_run(workspace, "meta")
    assert main(["predict", "meta", "--device", "cpu", "--run", teacher.name]) == 0
    seen = []

    def spy_fit(model, member, session, data, fold, log=None):
        seen.append(data.images.rows)
        return train.fit(model, member, session, data, fold, log)
    monkeypatch.setattr(pipeline, "fit", spy_fit)
    assert main(["train", "meta", "--device", "cpu", "--pseudo", teacher.name]) == 0
    rows = seen[0]
    test_rows = pd.read_csv(workspace / "inputs" / "meta" / "test.csv", dtype=str, keep_default_na=False)
    assert len(rows) == len(tiny.train) + len(test_rows)  # the default floor, 0, keeps every test image
    assert rows["temperature"].tolist() == tiny.train["temperature"].tolist() + test_rows["temperature"].tolist()
    assert main(["predict", "meta", "--device", "cpu"]) == 0
