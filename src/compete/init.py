"""`./run.sh init NAME`: write competition/NAME.yaml from what the downloaded files hold
(survey.py), with presets sized to the data, and say which guesses the user should confirm.

Small images (up to SMALL_SIDE pixels) get the in-memory recipes trained from scratch (apparel's
CNN for gray images, cifar10's ResNet-style net for colour); photos get torchvision's pretrained
MobileNetV2 (its own weights, from its cache) at PHOTO_SIDE pixels, fine-tuned head first.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import TargetSettings, competitions_dir, inputs_dir, load_competition, resolve_run
from .errors import PipelineError
from .files import DataDir, examples
from .leaderboard import fetch
from .metrics import BINARY, MULTI, REGRESSION
from .model_names import model_library
from .models import torchvision_cache_file
from .survey import Images, Survey, survey
from .tables import sample_format
from .target_guess import infer_target
from .targets import Target, fit_target

SMALL_SIDE = 64           # images up to this side train from scratch, in memory
PHOTO_SIDE = 224          # larger images (photos) are squashed to this side for pretrained members
PRETRAINED_MODEL = "tv/mobilenet_v2"  # torchvision's ImageNet MobileNetV2: downloaded once into its cache
SMALL_DATA = 2000         # fewer training images than this: hold out 20% for a steadier score
MIN_BATCH = 8             # smallest batch a preset is shrunk to for tiny training sets


@dataclass
class Choices:
    """The settings init picked, each with why, and what the user should confirm."""
    values: dict = field(default_factory=dict)      # yaml key -> value
    why: dict = field(default_factory=dict)         # yaml key -> comment
    summary: list[str] = field(default_factory=list)  # what was found, beyond the settings
    presets_note: list[str] = field(default_factory=list)  # what the presets are
    confirm: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)  # yaml lines written commented out

    def set(self, key: str, value, why: str = "") -> None:
        self.values[key], self.why[key] = value, why


def training_size(images: Images) -> tuple[int, bool, str]:
    """(side images are squashed to, whether they are photos, why)."""
    if not images.sizes:
        return PHOTO_SIDE, True, "no image could be sampled: the photo size"
    sizes = set(images.sizes)
    side = statistics.median(min(size) for size in images.sizes)
    if len(sizes) == 1 and len({*next(iter(sizes))}) == 1 and side <= SMALL_SIDE:
        return int(side), False, f"every sampled image is {int(side)}x{int(side)}"
    if side <= SMALL_SIDE:
        return int(side), False, "small images: their median shorter side"
    if side >= PHOTO_SIDE:
        return PHOTO_SIDE, True, "photos: the pretrained members' input side"
    return int(side) // 32 * 32, True, "photos under 224 px: their median shorter side, to 32 px"


def batch_for(batch: int, images: int) -> int:
    """The recipe's batch, halved until an epoch has at least four steps."""
    while batch * 4 > images and batch > MIN_BATCH:
        batch //= 2
    return batch


def halvings(side: int) -> int:
    """Pooling stages of the own networks that keep the last feature map at least 2 px wide."""
    return max(1, min(3, (side // 2).bit_length() - 1))


def tta(hflip: bool) -> list[str]:
    return ["identity", "hflip"] if hflip else ["identity"]


def small_presets(channels: int, side: int, fit_images: int, hflip: bool, val: float) -> dict:
    """apparel's CNN recipes for gray images, cifar10's ResNet-style recipes for colour."""
    widths = [32, 64, 128][:halvings(side)]
    if channels == 1:
        member = {"model": "cnn", "model_args": {"widths": widths, "convs": 1, "pool": "flatten",
                                                 "dropout": 0.1},
                  "epochs": 16, "batch_size": batch_for(256, fit_images), "lr": 0.005,
                  "label_smoothing": 0.0, "pad_crop": 1, "tta": tta(hflip)}
        fast = {**member, "epochs": 3, "batch_size": batch_for(128, fit_images), "pad_crop": 0}
    else:
        member = {"model": "resnet_small", "model_args": {"widths": widths}, "epochs": 12,
                  "batch_size": batch_for(256, fit_images), "optimizer": "sgd", "lr": 0.2,
                  "weight_decay": 0.0005, "label_smoothing": 0.2, "pad_crop": max(1, side // 8),
                  "tta": tta(hflip)}
        fast = {**member, "epochs": 5}
    return {"default": {"val_fraction": val, "members": [member]},
            "fast": {"val_fraction": val, "members": [fast]}}


def photo_presets(side: int, fit_images: int, hflip: bool, val: float) -> dict:
    """torchvision's pretrained MobileNetV2 with a new head. `default` trains the head alone on the
    frozen ImageNet features: on a CPU that costs a forward pass per image, and on a few hundred
    photos it scored as well as fine-tuning everything (BENCHMARKS.md). `finetune` then trains
    everything with lower rates for earlier layers; `ensemble` adds torchvision's pretrained
    ResNet-18 from its cache. fp32: depthwise convolutions run faster in fp32 than bf16 on CPUs."""
    member = {"model": PRETRAINED_MODEL, "pretrained": True, "normalize": "imagenet",
              "epochs": 5, "freeze_epochs": 5, "freeze_bn": True,
              "batch_size": batch_for(32, fit_images), "optimizer": "adamw", "lr": 0.002,
              "weight_decay": 0.01, "label_smoothing": 0.1, "pad_crop": side // 14, "tta": tta(hflip)}
    finetune = {**member, "epochs": 5, "freeze_epochs": 3, "lr_decay": 0.3, "lr_groups": 3}
    resnet = {**member, "model": "tv/resnet18", "freeze_bn": False}
    run = {"val_fraction": val, "precision": "fp32"}
    return {"default": {**run, "members": [member]}, "finetune": {**run, "members": [finetune]},
            "ensemble": {**run, "members": [member, resnet]}}


def _arch(model: str) -> str:
    return model_library(model)[1]


def guess_metric(target: Target, fill: str | None) -> tuple[str, str]:
    """The metric the competitions of a target kind are usually scored by, and the usual other
    choice: init writes it for the user to confirm."""
    if target.kind == BINARY:  # inferred where the sample's one column holds probabilities
        return "roc_auc", "a probability column; log_loss is the other common choice"
    if target.kind == MULTI:
        return "f2_samples", "sample-averaged F2, as Planet; f1_macro as Human Protein Atlas"
    if target.kind == REGRESSION and target.grades:
        return "quadratic_weighted_kappa", "grades, as APTOS; rmse scores the numbers themselves"
    if target.kind == REGRESSION:
        return "rmse", "numbers; mae is the other common choice"
    if fill == "probabilities":
        return "log_loss", "one probability column per class"
    return "accuracy", "one label per image"


def _labels_line(found: Survey, target: Target) -> str:
    """What the label column holds, for the summary."""
    counts = target.counts(target.encode(found.train_labels))
    if counts:
        what = f"{len(counts)} {'tags' if target.kind == MULTI else 'classes'} " \
               f"({examples([f'{name} {n}' for name, n in counts.items()])})"
    else:
        values = target.encode(found.train_labels)
        what = f"numbers {values.min():g} to {values.max():g} (mean {values.mean():.3g})"
    return f"labels      column {found.label_column!r}: {what}"


def _target(choices: Choices, found: Survey) -> tuple[Target, str | None]:
    """The target kind and metric the labels and the sample suggest (to confirm); returns the
    target and how the sample is filled."""
    settings, why = infer_target(found.train_labels, found.sample, found.label_column)
    target = fit_target(TargetSettings(**settings), found.train_labels)
    choices.set("target", settings if len(settings) > 1 else settings["kind"], f"confirm: {why}")
    fill = sample_format(found.sample, found.id_column, found.label_column, target.classes)
    metric, alternative = guess_metric(target, fill)
    choices.set("metric", metric, "confirm: a guess; use the competition's own metric")
    choices.summary.append(_labels_line(found, target))
    choices.confirm += [f"target: {_scalar(choices.values['target'])} is a guess from the labels ({why}); "
                        f"set target: in the yaml if they mean something else",
                        f"metric: {metric} is a guess ({alternative}); set the competition's own metric"]
    return target, fill


def yaml_settings(found: Survey) -> Choices:
    """Every yaml setting from the survey, with its reason, and what to confirm."""
    choices = Choices()
    _files(choices, found)
    channels = _channels(choices, found.images, found.channel_files)
    side, photos, why = training_size(found.images)
    choices.set("image_size", side, why)
    target, fill = _target(choices, found)
    choices.set("hflip", True, "confirm: a mirrored image keeps its class")
    choices.set("vflip", False, "confirm: true only if an upside-down image keeps its class")
    _presets(choices, len(found.train_ids), channels, side, photos)
    columns = "one column per tag" if target.kind == MULTI else "one probability column per class"
    if fill != "probabilities":
        columns = f"one {found.label_column!r} cell per image"
    choices.summary += [f"images      {found.images.describe()}",
                        f"submission  {columns} in {found.sample_csv}, ids in column {found.id_column!r}"]
    choices.confirm.append("hflip: true (mirrored images keep their class) and vflip: false")
    if photos and not torchvision_cache_file(_arch(PRETRAINED_MODEL)).is_file():
        choices.confirm.append(
            f"the presets start from torchvision's ImageNet weights of {PRETRAINED_MODEL}, downloaded on "
            f"first use to {torchvision_cache_file(_arch(PRETRAINED_MODEL))}; offline, put that file "
            f"there (TORCH_HOME names the folder above hub/), or train from scratch with "
            f"--set pretrained=false")
    if found.images.unreadable:
        choices.confirm.append(f"{len(found.images.unreadable)} sampled image(s) did not open: "
                               f"{examples(found.images.unreadable)}")
    choices.confirm += found.notes
    _metadata(choices, found)
    return choices


def _channels(choices: Choices, images, channel_files: list[str] | None) -> int:
    """channels from the sampled images (gray, colour, a TIFF's bands, or one file per channel);
    a scan without a window of its own is a thing to confirm."""
    bands = len(channel_files) if channel_files else images.bands()
    channels = bands or (1 if images.gray() else 3)
    choices.set("channels", channels, "one file per channel" if channel_files else f"{bands}-band TIFFs"
                if bands else "gray images" if channels == 1 else "colour images")
    if channel_files:
        choices.set("channel_files", channel_files, "each id's files, stacked in this order")
        choices.confirm.append(f"channel_files: {', '.join(channel_files)}: red, green, blue first (what "
                               f"a pretrained RGB stem expects), then the others by name; reorder if need be")
    if images.windows.get("none"):
        choices.confirm.append(f"{images.windows['none']} sampled DICOM scan(s) carry no display window: each "
                               f"maps the whole range its bits hold; set window: [center, width] in the "
                               f"scan's units (e.g. [40, 400] for CT soft tissue), or several to stack")
    return channels


def _metadata(choices: Choices, found: Survey) -> None:
    """Columns both CSVs hold besides the id and label, listed, and proposed (commented out)
    as metadata: read beside the image."""
    if not found.metadata:
        return
    columns = ", ".join(f"{name} ({what})" for name, what in found.metadata.items())
    choices.summary.append(f"metadata    columns in both CSVs besides the id and label: {columns}")
    choices.proposed.append(f"# metadata: {_scalar(list(found.metadata))}  # confirm: uncomment to feed "
                            f"these columns to every model beside the image")
    choices.confirm.append(f"metadata: the CSVs have {len(found.metadata)} more column(s) ({columns}); "
                           f"the yaml proposes them, commented out: uncomment the ones known for every image")


def _files(choices: Choices, found: Survey) -> None:
    """Which files and columns hold what."""
    if found.layout == "folders":
        choices.set("layout", "folders", f"{found.train_images}/<label>/<image>: {len(found.train_ids)} "
                    f"images in {len(set(found.train_labels))} class folders")
    else:
        choices.set("train_csv", found.train_csv, f"{len(found.train_ids)} rows")
    choices.set("test_csv", found.test_csv, "" if found.test_csv else "none: the sample lists the test ids")
    choices.set("sample_submission", found.sample_csv, f"{len(found.sample)} test ids")
    choices.set("train_images", found.train_images)
    choices.set("test_images", found.test_images)
    choices.set("id_column", found.id_column)
    choices.set("label_column", found.label_column)
    _templates(choices, found)


def _presets(choices: Choices, images: int, channels: int, side: int, photos: bool) -> None:
    fit_images = int(images * 0.8)  # what a hold-out or a fold leaves to train on, at the least
    val = 0.2 if images < SMALL_DATA else 0.1
    hflip = choices.values["hflip"]
    if not photos:
        choices.set("presets", small_presets(channels, side, fit_images, hflip, val))
        recipe = "apparel's CNN" if channels == 1 else "cifar10's ResNet-style net"
        choices.presets_note = [f"Presets: {recipe} from scratch, in memory: default, and fast "
                                f"(fewer epochs)."]
        return
    choices.set("presets", photo_presets(side, fit_images, hflip, val))
    choices.presets_note = [
        f"Presets: default trains a new head on torchvision's ImageNet MobileNetV2 ({PRETRAINED_MODEL},",
        "pretrained: the library downloads its weights once into $TORCH_HOME/hub/checkpoints), its",
        "backbone frozen, at the competition's image_size; finetune then trains everything, earlier",
        "layers at lower rates (slower on a CPU); ensemble adds torchvision's pretrained resnet18.",
        "Your own weights file instead: weights: FILE (in the weights folder). From scratch:",
        "--set pretrained=false."]


def _templates(choices: Choices, found: Survey) -> None:
    if found.layout == "folders" or found.train_template == found.test_template:
        choices.set("image_template", found.test_template,
                    "the ids carry the file name's extension" if found.test_template == "{id}" else "")
    else:
        choices.set("train_template", found.train_template)
        choices.set("test_template", found.test_template)


class _Dumper(yaml.SafeDumper):
    """Members that share settings are written out in full, not as YAML anchors and aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


def _scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip() \
        .removesuffix("...").strip()


def yaml_text(name: str, data_dir: Path, choices: Choices) -> str:
    lines = [f"# Written by `./run.sh init {name}` from {data_dir} on {time.strftime('%Y-%m-%d')}.",
             "# Lines marked 'confirm' are guesses; then: ./run.sh check " + name,
             *[f"# {line}" for line in choices.summary],
             f"description: {_scalar(name + ' (written by init)')}"]
    for key, value in choices.values.items():
        if key == "presets":
            continue
        line = f"{key}: {_scalar(value)}"
        lines.append(f"{line:<40} # {choices.why[key]}" if choices.why.get(key) else line)
    lines += choices.proposed
    presets = yaml.dump({"presets": choices.values["presets"]}, Dumper=_Dumper, sort_keys=False,
                        default_flow_style=None, width=100)
    return "\n".join(lines + [f"# {line}" for line in choices.presets_note]) + "\n" + presets


def init_competition(name: str, data_dir: Path, force: bool = False, kaggle: str | None = None) -> Path:
    """Write competition/NAME.yaml from the files in `data_dir`; print what was inferred. With
    a Kaggle slug, the files are downloaded first when `data_dir` has none, and the yaml names
    the slug for `download` and `submit`."""
    target = competitions_dir() / f"{name}.yaml"
    if target.exists() and not force:
        raise PipelineError(f"{target} exists already: init does not overwrite it. Pass --force to "
                            f"replace it, or edit it by hand.")
    if kaggle and not (data_dir.is_dir() and any(data_dir.iterdir())):
        files = fetch(kaggle, data_dir)
        print(f"Downloaded {kaggle} into {data_dir}: {', '.join(p.name for p in files)}")
    choices = yaml_settings(survey(DataDir(data_dir)))
    if kaggle:
        choices.set("kaggle", kaggle, "Kaggle competition: ./run.sh download and submit use it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml_text(name, data_dir, choices))
    comp = load_competition(name)  # what was written loads, and every preset resolves
    for preset in comp.presets:
        resolve_run(comp, preset)
    print(f"Wrote {target} from {data_dir}:")
    for key in ("layout", "train_csv", "test_csv", "train_images", "test_images", "image_size",
                "target", "metric"):
        if key in choices.values:
            why = choices.why.get(key)
            print(f"  {key:<18} {_scalar(choices.values[key])}{f'  ({why})' if why else ''}")
    for line in choices.summary:
        print(f"  {line}")
    print(f"  presets            {', '.join(comp.presets)}")
    print(f"Confirm (edit {target} where wrong):")
    for item in choices.confirm:
        print(f"  - {item}")
    data_option = "" if data_dir == inputs_dir() / name else f" --data {data_dir}"
    print(f"Next: ./run.sh check {name}{data_option}, then ./run.sh train {name}{data_option}")
    return target
