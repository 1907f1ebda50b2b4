"""Settings are checked when the yaml loads and when `--set` applies: a bad one stops the command
with one `error:` line naming the key, the value and what it may be, before any folder is written;
yaml values are coerced exactly like `--set` values."""
import pytest
import yaml

from compete.cli import main
from compete.config import load_competition, parse_sets, resolve_run
from compete.errors import PipelineError

from helpers import TINY_PRESET, assert_nothing_half_written, make_competition

MEMBER = TINY_PRESET["members"][0]

# where the bad value goes -> (setting, value, fragments of the allowed values named)
BAD = {
    "unknown model": ("member", "model", "resnet1800", ["cnn, resnet_small", "torchvision or timm"]),
    "unknown optimizer": ("member", "optimizer", "adam", ["adamw, sgd"]),
    "unknown schedule": ("member", "schedule", "linear", ["onecycle, cosine"]),
    "unknown normalize": ("member", "normalize", "imagenett", ["data, imagenet, pretrained"]),
    "fp16 precision": ("run", "precision", "fp16", ["auto, bf16, fp32"]),
    "unknown device": ("run", "device", "tpu", ["auto, cpu, cuda"]),
    "unknown metric": ("competition", "metric", "recall", ["accuracy", "top<K>_accuracy", "f<BETA>_macro"]),
    "text where a number goes": ("member", "epochs", "ten", ["expected int"]),
    "a list where a number goes": ("member", "lr", [0.1], ["expected float"]),
}


def write_with(workspace, where: str, key: str, value):
    member, run, extra = dict(MEMBER), {"val_fraction": 0.25}, {}
    {"member": member, "run": run, "competition": extra}[where][key] = value
    return make_competition(workspace, preset={**run, "members": [member]}, **extra)


@pytest.mark.parametrize("case", BAD)
def test_a_bad_yaml_setting_is_refused_before_anything_is_written(workspace, capsys, case):
    where, key, value, allowed = BAD[case]
    tiny = write_with(workspace, where, key, value)
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: ")
    assert f"competition/{tiny.name}.yaml" in err and f"{key}: " in err and str(value) in err
    for fragment in allowed:
        assert fragment in err
    assert_nothing_half_written(workspace, tiny.name)


@pytest.mark.parametrize("item,fragments", [
    ("precision=fp16", ["--set", "precision", "'fp16'", "auto, bf16, fp32"]),
    ("optimizer=adam", ["--set", "optimizer", "'adam'", "adamw, sgd"]),
    ("model=resnet1800", ["--set", "model", "resnet1800", "Unknown model"]),
    ("lr=fast", ["--set", "lr", "expected float", "'fast'"]),
    ("pretrained=yes", ["--set", "pretrained", "expected bool", "'yes'"]),
])
def test_a_bad_set_value_is_refused_before_anything_is_written(workspace, capsys, item, fragments):
    tiny = make_competition(workspace)
    assert main(["train", tiny.name, "--device", "cpu", "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(fragment in err for fragment in fragments), err
    assert_nothing_half_written(workspace, tiny.name)


def test_yaml_numbers_pyyaml_reads_as_text_become_numbers(workspace):
    make_competition(workspace, preset={"val_fraction": "0.3", "members": [
        {**MEMBER, "lr": "3e-4", "weight_decay": "1e-5", "epochs": "4", "pretrained": "false"}]})
    assert yaml.safe_load("lr: 3e-4")["lr"] == "3e-4"  # why: YAML 1.1 floats need a dot
    run = resolve_run(load_competition("tiny"), "default")
    member = run.members[0]
    assert (member.lr, member.weight_decay, member.epochs, member.pretrained) == (3e-4, 1e-5, 4, False)
    assert isinstance(member.lr, float) and isinstance(member.epochs, int) and run.val_fraction == 0.3


def test_yaml_and_set_values_are_coerced_alike():
    run_values, member_values = parse_sets(["lr=3e-4", "epochs=4", "weights=none", "tta=[identity, hflip]",
                                            "precision=bf16"])
    assert member_values == {"lr": 3e-4, "epochs": 4, "weights": None, "tta": ["identity", "hflip"]}
    assert run_values == {"precision": "bf16"}


def test_every_preset_is_checked_not_only_the_one_used(workspace, capsys):
    tiny = make_competition(workspace, presets={
        "default": TINY_PRESET, "broken": {"members": [{**MEMBER, "optimizer": "adam"}]}})
    with pytest.raises(PipelineError, match="preset 'broken' member 0: optimizer: 'adam'"):
        load_competition(tiny.name)


def test_integers_where_a_float_goes_are_fine_and_booleans_where_a_number_goes_are_not(workspace):
    make_competition(workspace, preset={"members": [{**MEMBER, "lr": 1}]})
    assert resolve_run(load_competition("tiny"), "default").members[0].lr == 1.0
    make_competition(workspace, name="other", preset={"members": [{**MEMBER, "epochs": True}]})
    with pytest.raises(PipelineError, match="epochs: expected int, got True"):
        load_competition("other")
