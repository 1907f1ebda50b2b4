"""Typed configuration: a competition's yaml, its presets, and command-line overrides.

Everything competition-specific lives in `competition/<name>.yaml`; this module turns it into
dataclasses and is the one place where settings are defined, with their units and defaults.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import PipelineError
from .guards import check_scan_settings, check_settings
from .metrics import metric_entry
from .model_names import model_library

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


def weights_dir() -> Path:
    """Local pretrained-weights files that members name (`weights: FILE`): $COMPETE_WEIGHTS, or
    weights/ in the workspace (git-ignored)."""
    given = os.environ.get("COMPETE_WEIGHTS")
    return Path(given).expanduser().resolve() if given else workspace() / "weights"



LAYOUTS = ("csv", "folders")  # how training images are labelled (Competition.layout)
PREDICTING_MODELS = {  # predict --models: which of a run's models predict, as predict says it
    "folds": "fold models", "refit": "refit models, trained on every labelled image",
    "blend": "refit and fold models, half and half"}
CHOICES = {  # settings that take one of a few names; `model` and `metric` have registries
    "optimizer": ("adamw", "sgd"),                   # sgd: with Nesterov momentum
    "schedule": ("onecycle", "cosine"),
    "normalize": ("data", "imagenet", "pretrained"),  # see models._normalization
    "precision": ("auto", "bf16", "fp32"),           # autocast dtype; auto: bf16 where it is fast
    "device": ("auto", "cpu", "cuda"),
    "layout": LAYOUTS,                               # see Competition.layout
    "resize": ("squash", "crop", "letterbox"),        # see imagestore.fit_to_size
    "photo_augment": ("auto", "loader", "device"),    # see RunConfig.photo_augment
    "select": ("last", "best"),                      # see Member.select
}
REGISTRIES = {"model": model_library, "metric": metric_entry}  # each raises on an unknown name
TYPES = {"bool": bool, "int": int, "float": float, "str": str, "dict": dict, "list": list}


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
    epoch_steps: int = 0             # >0: an epoch ends after this many batches (quick trials on
                                     # large data, benchmarks); 0 = every image once
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
    select: str = "last"             # which epoch's weights the member keeps and scores:
                                     # last: the final ones (the EMA where it is on), scored on
                                     # validation data that chose nothing; best: the epoch with the
                                     # best validation metric, a score selected on the data that
                                     # reports it, so optimistic (the summary says so)
    patience: int = 0                # epochs without a better validation metric before stopping;
                                     # 0 = off; >0 needs the best epoch, so it implies select: best
    ema: float = 0.0                 # per-step decay of an exponential moving average of weights
                                     # (warmed up: min(ema, (1 + n) / (10 + n)) after n steps)
    mixup: float = 0.0               # Beta(a, a) mixup strength; 0 = off
    cutmix: float = 0.0              # Beta(a, a) CutMix strength; 0 = off (both on: one per batch)
    pad_crop: int = 2                # random-crop padding in pixels; 0 = off
    cutout: int = 0                  # side of a random erased square in pixels; 0 = off
    crop_scale: float = 1.0          # random-resized crop: smallest share of the image's area kept
                                     # (aspect 3/4..4/3), scaled to the member's size; 1 = off
    rotate: float = 0.0              # random rotation by up to this many degrees either way; 0 = off
    jitter: float = 0.0              # colour jitter: brightness, contrast and saturation factors
                                     # drawn from [1 - jitter, 1 + jitter]; 0 = off
    freeze_epochs: int = 0           # epochs training only the new head (pretrained members)
    lr_decay: float = 1.0            # discriminative lr: each earlier layer group gets lr * this
    lr_groups: int = 3               # number of backbone layer groups for discriminative lr
    freeze_bn: bool = False          # keep BatchNorm statistics of the backbone fixed
    head_hidden: int = 0             # >0: new head is Linear-ReLU-Dropout-Linear with this width
    metadata_hidden: int = 64        # width of the MLP that reads the metadata columns beside the
                                     # image features (competitions with metadata: only)
    tta: list = field(default_factory=lambda: ["identity"])  # test-time transforms, see augment.TTA


@dataclass
class Competition:
    """Where a competition's files are and what they mean."""
    name: str
    layout: str = "csv"                      # csv: train_csv lists ids and labels; folders: no train
                                             # CSV, train_images/<label>/<image> (see layout.py)
    train_csv: str = "train.csv"             # relative to the data folder; may sit inside a zip
    test_csv: str | None = "test.csv"        # optional: the sample submission's ids suffice
    sample_submission: str = "sample_submission.csv"
    train_images: str = "train"              # folder (or zip of it) holding the images; "" = top
    test_images: str = "test"
    id_column: str = "id"
    label_column: str = "label"
    image_template: str = "{id}.png"         # path of an image inside its folder; "{id}" when the
                                             # ids carry the extension (or a relative path)
    train_template: str | None = None        # train images' own template; None: image_template
    test_template: str | None = None         # test images' own template; None: image_template
    channels: int = 1                        # 1 = grayscale, 3 = RGB; every image is converted;
                                             # up to scans.MAX_CHANNELS from multi-band TIFFs, DICOM
                                             # windows or channel_files
    window: list | None = None               # DICOM display window [center, width] in the scan's
                                             # units (e.g. Hounsfield), or a list of them stacked as
                                             # channels; None: each file's own window (scans.py)
    channel_files: list | None = None        # one file per channel: name patterns in channel order,
                                             # e.g. ["{id}_red.png", "{id}_green.png", ...]; they take
                                             # the place of the image templates
    image_size: int = 28                     # side in pixels; other sizes are resized to it
    resize: str = "squash"                   # how: squash (stretch the whole image), crop (shorter
                                             # side to image_size, centre square), letterbox (longer
                                             # side to image_size, black bars)
    metric: str = "accuracy"                 # metrics.py: accuracy, log_loss, roc_auc, f2_samples, ...
    target: str | dict = "single_label"      # kind name, or {kind: ..., TargetSettings keys}
    hflip: bool = True                       # horizontal flips keep the class (train and TTA)
    vflip: bool = False
    description: str = ""
    class_names: dict = field(default_factory=dict)  # label -> readable name, for plots and reports
    group_column: str | None = None          # train CSV column naming each image's group (a patient,
                                             # an object photographed twice): a group never straddles a split
    groups: str | None = None                # "near_duplicates": the groups are clusters of exact and
                                             # near-duplicate training images instead
    near_duplicate_bits: int = 16            # perceptual hashes (256 bits) at most this many bits apart
                                             # are near-duplicates (check; groups: near_duplicates)
    metadata: list = field(default_factory=list)  # train and test CSV columns fed to every model
                                             # beside the image (numbers or categories; metadata.py)
    kaggle: str | None = None                # kaggle.com slug (the URL's /competitions/SLUG) for
                                             # download and submit; None: a site without an API
    public_rows: int | None = None           # test images the public leaderboard scores (often a
                                             # share of the test set): `runs` gives public scores a 95% ±
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
    time_limit: int = 0              # >0: seconds the whole `train` command may take; epochs (then
                                     # folds, members) are sized to fit it, see budget.py
    resident_gb: float = 1.0         # images (uint8) up to this size stay whole on the device; larger
                                     # sets stream from the disk cache (a GPU: at most half its free
                                     # memory). Peak memory stays near this, whatever the data's size
    loader_workers: int = 0          # threads that read (and augment) streamed batches ahead;
                                     # 0: one on a CPU, four on a GPU
    photo_augment: str = "auto"      # where crop_scale/rotate/jitter run: loader (albumentations, per
                                     # image, batches streamed), device (batched tensor ops); auto:
                                     # loader on a CPU, device on a GPU (bench/photo_augment.py)
    refit: bool = False              # after validation, train each member again on every labelled
                                     # image (same epochs; select: best: its folds' mean best epoch)
                                     # and predict with those models; the score stays the folds'
    refit_blend: bool = True         # with refit: predict averages the refit model and the fold
                                     # models' average half and half (false: the refit alone;
                                     # measured in BENCHMARKS.md, issue 13)
    pseudo: str | None = None        # train --pseudo RUN: the test images join every fold's training
                                     # part with RUN's calibrated, blended test predictions as soft
                                     # targets (teaching.py); no validation part ever sees them
    pseudo_weight: float = 1.0       # loss weight of a pseudo-labelled test image against a labelled
                                     # image's 1
    pseudo_floor: float = 0.0        # a test image whose teacher confidence (top class probability;
                                     # the least sure tag) is below this is left out; 0 keeps all
    distill: str | None = None       # train --distill RUN: every member learns from RUN's soft
                                     # predictions, out-of-fold ones on the train images, test ones
                                     # on the test images (which join training), mixed with the labels
    distill_weight: float = 0.5      # share of a train image's loss from the teacher (the labels
                                     # carry the rest); a test image's loss weight
    distill_temperature: float = 2.0  # both teacher and student soften their logits by this (x T^2
                                      # on the loss, as Hinton et al.); 1: the teacher's own outputs
    members: list[Member] = field(default_factory=list)


def _check_keys(cls, values: dict, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(
            f"{where}: unknown setting(s) {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")


def _coerce(spec, value):
    """A yaml or command-line value as the type of dataclass field `spec`: text is parsed the
    way `--set` parses it (PyYAML reads `lr: 3e-4` as text); anything else must already fit."""
    kind, *rest = [part.strip() for part in spec.type.split("|")]
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in rest):
        if "None" in rest:
            return None
        raise ValueError
    wanted = TYPES.get(kind.split("[")[0], object)
    others = [TYPES.get(part.split("[")[0], object) for part in rest if part != "None"]
    if any(isinstance(value, other) for other in others):  # e.g. `str | dict` given a dict
        return value
    if isinstance(value, str) and wanted is bool:
        return {"true": True, "false": False}[value.lower()]
    if isinstance(value, str) and wanted in (int, float):
        return wanted(value)
    if isinstance(value, str) and wanted in (dict, list):
        value = yaml.safe_load(value)
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        raise ValueError
    return value


def _checked(cls, values: dict, where: str) -> dict:
    """`values` coerced to the fields' types and checked against CHOICES and REGISTRIES; the
    first bad one raises a PipelineError naming the key, the value and what it may be."""
    _check_keys(cls, values, where)
    specs = {f.name: f for f in fields(cls)}
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _coerce(specs[key], value)
        except (ValueError, KeyError, TypeError, yaml.YAMLError):
            raise PipelineError(f"{where}: {key}: expected {specs[key].type}, got {value!r}.") from None
        if key in CHOICES and checked[key] not in CHOICES[key]:
            raise PipelineError(f"{where}: {key}: {checked[key]!r} is not one of "
                                f"{', '.join(CHOICES[key])}.")
        if key in REGISTRIES:
            try:
                REGISTRIES[key](checked[key])
            except PipelineError as error:
                raise PipelineError(f"{where}: {key}: {error}") from None
    return checked


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
    competition = Competition(**_checked(Competition, values, str(path)))
    check_settings(competition, str(path))  # files it names stay in the data folder; sizes bounded
    check_scan_settings(competition.channels, competition.window, competition.channel_files, str(path))
    competition.presets = {preset: _checked_preset(competition, preset, settings)
                           for preset, settings in competition.presets.items()}
    target_settings(competition)  # a wrong target stops every command now
    _check_metadata(competition, str(path))
    if competition.public_rows is not None and competition.public_rows < 1:
        raise PipelineError(f"{path}: public_rows: {competition.public_rows} must be a positive number of test images.")
    return competition


def _check_metadata(competition: Competition, where: str) -> None:
    """`metadata:` names distinct CSV columns other than the id and label, in a csv layout."""
    columns = competition.metadata
    if not all(isinstance(column, str) and column for column in columns):
        raise PipelineError(f"{where}: metadata: write a list of CSV column names, e.g. [age, sex]; "
                            f"it says {columns!r}.")
    taken = {competition.id_column, competition.label_column} & set(columns)
    if taken or len(set(columns)) < len(columns):
        raise PipelineError(f"{where}: metadata: {columns!r} must name distinct columns other than "
                            f"the id and label columns.")
    if columns and competition.layout != "csv":
        raise PipelineError(f"{where}: metadata: needs a train CSV beside the images (layout: csv).")


def _checked_preset(competition: Competition, preset: str, values) -> dict:
    """A preset's run settings and members, coerced and checked like `--set` values."""
    where = f"competition/{competition.name}.yaml preset '{preset}'"
    if not isinstance(values, dict) or not isinstance(values.get("members", []), list) \
            or not all(isinstance(member, dict) for member in values.get("members", [])):
        raise PipelineError(f"{where}: write run settings as `key: value` lines and members as a "
                            f"list of them (copy a preset of competition/digits.yaml).")
    checked = _checked(RunConfig, {k: v for k, v in values.items() if k != "members"}, where)
    if "members" in values:
        checked["members"] = [_checked(Member, member, f"{where} member {m}")
                              for m, member in enumerate(values["members"])]
    return checked


def resolve_run(competition: Competition, preset: str = "default", overrides: dict | None = None,
                member_overrides: dict | None = None) -> RunConfig:
    """Build the run settings from a preset, then apply run- and member-level overrides (None
    values: not given). Given epochs turn a preset's time limit off; given with a time limit
    too, they are refused (both size the run)."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if "epochs" in (member_overrides or {}):
        if given.get("time_limit"):
            raise PipelineError("--epochs and --time-limit both size the run: give one of them.")
        given["time_limit"] = 0  # explicit epochs win over a preset's time limit
    if preset not in competition.presets:
        raise PipelineError(
            f"competition/{competition.name}.yaml has no preset '{preset}'. "
            f"Available: {', '.join(sorted(competition.presets)) or 'none'}.")
    values = dict(competition.presets[preset])
    members = values.pop("members", [{}])
    where = f"competition/{competition.name}.yaml preset '{preset}'"
    run = RunConfig(preset=preset, **_checked(RunConfig, values, where))
    run.members = [Member(**_checked(Member, {**m, **(member_overrides or {})}, f"{where} member {i}"))
                   for i, m in enumerate(members)]
    for member in run.members:
        if member.weights:
            member.weights = str(weights_path(member.weights, where + " member"))
    for key, value in _checked(RunConfig, given, "command line").items():
        setattr(run, key, value)
    check_teaching(run, where)
    if run.refit and run.folds <= 1 and run.val_fraction <= 0:
        raise PipelineError(f"{where}: refit: true with val_fraction 0 and no folds: the model already "
                            f"trains on every image. Hold some out (--set val_fraction=0.1) or drop --refit.")
    return run


TEACHING_RANGES = {  # setting -> (lowest, highest allowed, whether the lowest itself is allowed)
    "pseudo_weight": (0.0, float("inf"), True), "pseudo_floor": (0.0, 1.0, True),
    "distill_weight": (0.0, 1.0, True), "distill_temperature": (0.0, float("inf"), False)}


def check_teaching(run: RunConfig, where: str) -> None:
    """One teacher per run, and the teaching settings in their ranges."""
    if run.pseudo and run.distill:
        raise PipelineError(f"{where}: pseudo and distill both name a teacher: give one of --pseudo, --distill.")
    for key, (low, high, closed) in TEACHING_RANGES.items():
        value = getattr(run, key)
        if not (low <= value <= high if closed else low < value <= high):
            raise PipelineError(f"{where}: {key} {value} is outside {'[' if closed else '('}{low:g}, {high:g}].")


def weights_path(name: str, where: str) -> Path:
    """A member's `weights:` file, inside the weights folder (never outside it)."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise PipelineError(
            f"{where}: weights: {name} must name a file inside the weights folder {weights_dir()}, "
            f"e.g. weights: {relative.name}. Put the file there, or point COMPETE_WEIGHTS at its folder.")
    return weights_dir() / relative


def _saved(cls, values: dict, where: str):
    """Settings saved by a run, rebuilt; one this version does not know (renamed, or from a
    newer version) is refused by name instead of ending in a TypeError."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise PipelineError(f"{where}: settings this version does not know: {', '.join(unknown)}. "
                            f"The run was written by another version of compete: train it again.")
    return cls(**values)


def competition_from_dict(values: dict, where: str = "config.json competition") -> Competition:
    """The competition settings saved in a run folder's config.json."""
    return _saved(Competition, values, where)


def member_from_dict(values: dict, where: str) -> Member:
    """A member's settings saved in a run (config.json, a checkpoint)."""
    return _saved(Member, values, where)


def run_from_dict(values: dict, where: str = "config.json") -> RunConfig:
    """Rebuild the run settings saved in a run folder's config.json."""
    values = dict(values)
    members = [member_from_dict(member, f"{where} member {m}") for m, member in enumerate(values.pop("members"))]
    return _saved(RunConfig, {**values, "members": members}, where)


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
            run_values.update(_checked(RunConfig, {key: text}, "--set"))
        elif key in member_keys:
            member_values.update(_checked(Member, {key: text}, "--set"))
        else:
            raise PipelineError(
                f"--set {key}: unknown setting. Run settings: {', '.join(sorted(run_keys))}; "
                f"member settings: {', '.join(sorted(member_keys))}.")
    return run_values, member_values

