"""Typed configuration: a competition's yaml, its presets, and command-line overrides.

Everything competition-specific lives in `competition/<name>.yaml`; this module turns it into
dataclasses and is the one place where settings are defined, with their units and defaults.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def workspace() -> Path:
    """Folder holding competition/, inputs/ and submissions/: the project, or $COMPETE_ROOT
    (tests point it at a temporary folder)."""
    return Path(os.environ.get("COMPETE_ROOT", PROJECT_ROOT))


def competitions_dir() -> Path:
    return workspace() / "competition"


def inputs_dir() -> Path:
    return workspace() / "inputs"


def submissions_dir() -> Path:
    return workspace() / "submissions"


def cache_dir() -> Path:
    """Decoded images; never inside a competition's data folder, which may be read-only."""
    return inputs_dir() / ".cache"


class PipelineError(Exception):
    """An error the user can fix: the message names the file, the row or id, and the fix."""


@dataclass
class Member:
    """One model of an ensemble and how to train it."""
    model: str = "cnn"               # registry name: cnn, resnet_small, or a torchvision/timm model
    model_args: dict = field(default_factory=dict)  # architecture keywords (widths, dropout, ...)
    pretrained: bool = False         # use the library's pretrained weights (torchvision enum / timm)
    weights: str | None = None       # local state_dict file for the backbone (offline machines)
    image_size: int | None = None    # side the member sees; None keeps the competition's size
    normalize: str = "data"          # "data": train-set mean/std; "imagenet"; "pretrained": the
                                     # stats the library says the weights were trained with
    epochs: int = 10                 # upper bound; early stopping may end sooner
    batch_size: int = 256            # images per optimizer step
    optimizer: str = "adamw"         # adamw | sgd (nesterov)
    lr: float = 3e-3                 # peak learning rate of the schedule
    weight_decay: float = 5e-4       # decoupled for adamw, L2 for sgd
    schedule: str = "onecycle"       # onecycle | cosine
    warmup: float = 0.2              # fraction of steps spent warming up (onecycle)
    label_smoothing: float = 0.1     # cross-entropy target smoothing
    loss: str = "auto"               # auto: the target kind's own (cross_entropy; bce per tag or for
                                     # binary; mse for regression); or focal, smooth_l1 (targets.py)
    focal_gamma: float = 2.0         # loss: focal weighs each image's loss by (1 - p_true) ** this
    class_weights: str = "none"      # none | balanced (each class, or each tag's positives, weighed
                                     # by inverse frequency, as scikit-learn's) | sqrt (its square root)
    sampler: str = "uniform"         # uniform: a permutation per epoch | balanced: batches drawn with
                                     # replacement, every class (tag, grade) equally often
    patience: int = 0                # epochs without val-loss improvement before stopping; 0 = off
    ema: float = 0.0                 # per-step decay of an exponential moving average of weights
                                     # (warmed up: min(ema, (1 + n) / (10 + n)) after n steps)
    mixup: float = 0.0               # Beta(a, a) mixup strength; 0 = off
    cutmix: float = 0.0              # Beta(a, a) CutMix strength; 0 = off (both on: one per batch)
    pad_crop: int = 2                # random-crop padding in pixels; 0 = off
    cutout: int = 0                  # side of a random erased square in pixels; 0 = off
    freeze_epochs: int = 0           # epochs training only the new head (pretrained members)
    lr_decay: float = 1.0            # discriminative lr: each earlier layer group gets lr * this
    lr_groups: int = 3               # number of backbone layer groups for discriminative lr
    freeze_bn: bool = False          # keep BatchNorm statistics of the backbone fixed
    head_hidden: int = 0             # >0: new head is Linear-ReLU-Dropout-Linear with this width
    tta: list = field(default_factory=lambda: ["identity"])  # test-time transforms, see augment.TTA


@dataclass
class Competition:
    """Where a competition's files are and what they mean."""
    name: str
    train_csv: str = "train.csv"             # relative to the data folder; may sit inside a zip
    test_csv: str | None = "test.csv"        # optional: the sample submission's ids suffice
    sample_submission: str = "sample_submission.csv"
    train_images: str = "train"              # folder, or zip holding <folder>/<id>.png
    test_images: str = "test"
    id_column: str = "id"
    label_column: str = "label"
    image_template: str = "{id}.png"         # file name of an image inside its folder
    channels: int = 1                        # 1 = grayscale, 3 = RGB; every image is converted
    image_size: int = 28                     # side in pixels; other sizes are resized to it
    metric: str = "accuracy"                 # metrics.py: accuracy, log_loss, roc_auc, f2_samples, ...
    target: str | dict = "single_label"      # kind name, or {kind: ..., TargetSettings keys}
    hflip: bool = True                       # horizontal flips keep the class (train and TTA)
    vflip: bool = False
    description: str = ""
    class_names: dict = field(default_factory=dict)  # label -> readable name, for plots and reports
    presets: dict = field(default_factory=dict)  # preset name -> run settings and members


@dataclass
class TargetSettings:
    """What a label cell holds and what the model outputs for it (the `target:` of the yaml);
    targets.py turns it into a kind."""
    kind: str = "single_label"       # single_label | binary | multi_label | regression
    delimiter: str = " "             # multi_label: what separates the tags of a label cell
    positive: str | None = None      # binary: the label whose probability is submitted; None: the
                                     # later of the two in sorted order ("1" of 0/1, "dog" of cat/dog)
    grades: list | None = None       # regression: [lowest, highest] integer grade; predictions are
                                     # cut into grades at points fitted out of fold; None: numbers


def target_settings(comp: "Competition") -> TargetSettings:
    """The competition's `target:` (a kind name or a mapping), checked."""
    values = {"kind": comp.target} if isinstance(comp.target, str) else dict(comp.target or {})
    where = f"competition/{comp.name}.yaml target"
    _check_keys(TargetSettings, values, where)
    settings = TargetSettings(**values)
    kinds = ("single_label", "binary", "multi_label", "regression")
    if settings.kind not in kinds:
        raise PipelineError(f"{where}: unknown kind {settings.kind!r}. Use one of {', '.join(kinds)}.")
    if not settings.delimiter:
        raise PipelineError(f"{where}: delimiter must be a character or more, e.g. ' ' or ';'.")
    grades = settings.grades
    if grades is not None and not (isinstance(grades, list) and len(grades) == 2 and
                                   all(isinstance(g, int) for g in grades) and grades[0] < grades[1]):
        raise PipelineError(f"{where}: grades must be [lowest, highest] integers, e.g. [0, 4]; "
                            f"it says {grades!r}.")
    return settings


@dataclass
class RunConfig:
    """Settings of one `train` invocation, resolved from a preset plus overrides."""
    preset: str = "default"
    seed: int = 0
    val_fraction: float = 0.1        # stratified hold-out share when folds == 0
    folds: int = 0                   # >1: stratified k-fold cross-validation
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "auto"          # auto | bf16 | fp32 (autocast dtype)
    compile: bool = False            # torch.compile the model (GPU)
    deterministic: bool = False      # GPU: deterministic kernels, no cuDNN autotuning (slower);
                                     # CPU runs are bit-reproducible either way
    threads: int = 0                 # torch CPU threads; 0 = all cores
    subset: int = 0                  # >0: train on a stratified subset of this many images
    members: list[Member] = field(default_factory=list)


def _check_keys(cls, values: dict, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(
            f"{where}: unknown setting(s) {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")


def _coerce(cls, key: str, text: str):
    """Parse a command-line value into the type of dataclass field `key`."""
    spec = {f.name: f for f in fields(cls)}[key]
    current = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(current, (int, float)):
            return type(current)(text)
        if isinstance(current, str):
            return text
        if text.lower() in ("none", "null"):
            return None
        return yaml.safe_load(text)  # lists, dicts and optional values
    except (ValueError, yaml.YAMLError):
        raise PipelineError(
            f"--set {key}={text}: expected a {type(current).__name__}, e.g. {key}={current}.") from None


def competition_path(name: str) -> Path:
    if not re.fullmatch(r"\w[\w.-]*", name):  # the name also names folders: no '../', no '/'
        raise PipelineError(f"Competition name {name!r}: use letters, digits, '_', '-' and '.' only.")
    path = competitions_dir() / f"{name}.yaml"
    if not path.is_file() and (PROJECT_ROOT / "competition" / f"{name}.yaml").is_file():
        path = PROJECT_ROOT / "competition" / f"{name}.yaml"  # the shipped ones, e.g. digits
    if not path.is_file():
        known = sorted(p.stem for p in competitions_dir().glob("*.yaml"))
        raise PipelineError(
            f"Unknown competition '{name}': {path} does not exist. Known: {', '.join(known)}. "
            f"To add one, copy competition/digits.yaml to competition/{name}.yaml and edit it.")
    return path


def load_competition(name: str) -> Competition:
    path = competition_path(name)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise PipelineError(f"{path}: not valid YAML ({error}).") from None
    values.setdefault("name", name)
    _check_keys(Competition, values, str(path))
    comp = Competition(**values)
    target_settings(comp)  # a wrong target stops every command now
    return comp


def resolve_run(competition: Competition, preset: str = "default", overrides: dict | None = None,
                member_overrides: dict | None = None) -> RunConfig:
    """Build the run settings from a preset, then apply run- and member-level overrides."""
    if preset not in competition.presets:
        raise PipelineError(
            f"competition/{competition.name}.yaml has no preset '{preset}'. "
            f"Available: {', '.join(sorted(competition.presets)) or 'none'}.")
    values = dict(competition.presets[preset])
    members = values.pop("members", [{}])
    where = f"competition/{competition.name}.yaml preset '{preset}'"
    _check_keys(RunConfig, values, where)
    for member in members:
        _check_keys(Member, member, where + " member")
    run = RunConfig(preset=preset, **values)
    run.members = [Member(**{**m, **(member_overrides or {})}) for m in members]
    for member in run.members:
        if member.weights and not Path(member.weights).is_absolute():
            member.weights = str((PROJECT_ROOT / member.weights).resolve())  # yaml paths: from the project
    for key, value in (overrides or {}).items():
        if value is not None:
            setattr(run, key, value)
    return run


def weights_files(competition: Competition) -> list[Path]:
    """Every local weights file the competition's presets name (absolute paths)."""
    return sorted({Path(member.weights) for preset in competition.presets
                   for member in resolve_run(competition, preset).members if member.weights})


def run_from_dict(values: dict) -> RunConfig:
    """Rebuild the run settings saved in a run folder's config.json."""
    values = dict(values)
    members = [Member(**member) for member in values.pop("members")]
    return RunConfig(**values, members=members)


def parse_sets(items: list[str]) -> tuple[dict, dict]:
    """Split `--set key=value` items into run-level and member-level overrides, type-checked."""
    run_keys = {f.name for f in fields(RunConfig)} - {"members"}
    member_keys = {f.name for f in fields(Member)}
    run_values, member_values = {}, {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise PipelineError(f"--set {item}: expected key=value, e.g. --set lr=0.001.")
        if key in run_keys:
            run_values[key] = _coerce(RunConfig, key, text)
        elif key in member_keys:
            member_values[key] = _coerce(Member, key, text)
        else:
            raise PipelineError(
                f"--set {key}: unknown setting. Run settings: {', '.join(sorted(run_keys))}; "
                f"member settings: {', '.join(sorted(member_keys))}.")
    return run_values, member_values


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
