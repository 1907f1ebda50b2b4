"""Every target kind on real images: competitions derived from ../shared/datasets in a scratch
workspace (symlinked zips, derived train.csv and sample; nothing is written into the project's
inputs/ or competition/), each trained and predicted as a user does, and scored out of fold with
its competition's metric beside the plain single-label recipe where that compares.

    apparel, 20,000 images, 3-fold cross-validation, the `fast` CNN (3 epochs):
      single   the 10 classes (the plain recipe every derived kind is compared with)
      binary   "is it footwear?" (sandal, sneaker, ankle boot), one probability column, ROC-AUC
      tags     multi-label tags derived from the classes, space-separated, sample-averaged F2
      grades   an ordinal "warmth" grade 0-4 derived from the classes, regression, kappa
    cifar10, 9 classes cut to 5% (100 images each) beside the full 2,000 of "airplane",
      3-fold, a resnet_small recipe, macro F1: plain, class weights, balanced sampler, focal loss

    .venv/bin/python bench/target_kinds.py [--only apparel|cifar10] [--scratch DIR]

The plain recipe's scores for a derived kind come from its out-of-fold class probabilities
mapped onto the derived labels (footwear = the sum of three classes' probabilities; the tags and
grade of the most probable class). Decisions fitted out of fold (thresholds, cut-points) are
also scored cross-fitted: fitted on one half of the images, scored on the other, both ways.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from bench import machine  # noqa: E402
from compete.ensemble import blend_oof  # noqa: E402
from compete.metrics import METRICS, score  # noqa: E402
from compete.runs import RunFolder  # noqa: E402
from compete.targets import target_of_run  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
FOOTWEAR = {"5", "7", "9"}                      # sandal, sneaker, ankle boot
TAGS = {"0": "upper", "1": "legwear", "2": "upper sleeves", "3": "upper", "4": "upper sleeves",
        "5": "footwear", "6": "upper sleeves", "7": "footwear closed", "8": "accessory",
        "9": "footwear closed"}
WARMTH = {"5": 0, "8": 0, "0": 1, "3": 1, "7": 1, "1": 2, "6": 2, "2": 3, "9": 3, "4": 4}
APPAREL_SUBSET = 20_000
FAST_CNN = {"model": "cnn", "model_args": {"widths": [32, 64, 128], "convs": 1, "pool": "flatten",
                                           "dropout": 0.1},
            "epochs": 3, "batch_size": 128, "lr": 0.005, "label_smoothing": 0.0, "pad_crop": 0}
CIFAR_RESNET = {"model": "resnet_small", "model_args": {"widths": [32, 64, 128]}, "epochs": 15,
                "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0005,
                "label_smoothing": 0.0, "pad_crop": 4}
CIFAR_KEPT = 0.05                               # share kept of every class but the first


def scratch_competition(root: Path, name: str, source: Path, train: pd.DataFrame, sample: pd.DataFrame,
                        spec: dict) -> None:
    """inputs/NAME: the source's zips linked, a derived train.csv and sample; competition/NAME.yaml."""
    data = root / "inputs" / name
    data.mkdir(parents=True, exist_ok=True)
    for archive in ("train.zip", "test.zip"):
        link = data / archive
        if not link.exists():
            link.symlink_to(source / archive)
    train.to_csv(data / "train.csv", index=False)
    sample.to_csv(data / "sample_submission.csv", index=False)
    (root / "competition").mkdir(exist_ok=True)
    (root / "competition" / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def apparel_competitions(root: Path) -> dict[str, str]:
    """The four apparel competitions on one stratified 20,000-image subset; name -> metric."""
    with zipfile.ZipFile(SHARED / "apparel" / "train.zip") as archive:
        labels = pd.read_csv(archive.open("train.csv"), dtype=str)
    subset = labels.groupby("label", group_keys=False).sample(APPAREL_SUBSET // 10, random_state=0).sort_index()
    sample = pd.read_csv(SHARED / "apparel" / "sample_submission.csv", dtype=str)
    base = {"channels": 1, "image_size": 28, "hflip": True, "test_csv": "test.csv",
            "presets": {"default": {"folds": 3, "members": [FAST_CNN]}}}
    kinds = {"a_single": ({}, "accuracy", subset["label"], "0"),
             "a_binary": ({"target": "binary"}, "roc_auc", subset["label"].isin(FOOTWEAR).astype(int).astype(str), 0.5),
             "a_tags": ({"target": {"kind": "multi_label", "delimiter": " "}}, "f2_samples",
                        subset["label"].map(TAGS), "upper"),
             "a_grades": ({"target": {"kind": "regression", "grades": [0, 4]}}, "quadratic_weighted_kappa",
                          subset["label"].map(WARMTH).astype(str), 0)}
    for name, (target, metric, derived, cell) in kinds.items():
        scratch_competition(root, name, SHARED / "apparel", pd.DataFrame({"id": subset["id"], "label": derived}),
                            sample.assign(label=cell), {**base, **target, "metric": metric})
    return {name: kind[1] for name, kind in kinds.items()}


def cifar_competitions(root: Path) -> dict[str, list[str]]:
    """cifar10 with every class but 'airplane' cut to 5%; name -> extra train options."""
    labels = pd.read_csv(SHARED / "cifar10" / "trainLabels.csv", dtype=str)
    cut = labels[labels["label"] != "airplane"].groupby("label", group_keys=False).sample(
        frac=CIFAR_KEPT, random_state=0)
    train = pd.concat([labels[labels["label"] == "airplane"], cut]).sort_index()
    sample = pd.read_csv(SHARED / "cifar10" / "sampleSubmission.csv", dtype=str)
    spec = {"channels": 3, "image_size": 32, "hflip": True, "test_csv": None, "metric": "f1_macro",
            "presets": {"default": {"folds": 3, "members": [CIFAR_RESNET]}}}
    scratch_competition(root, "c_imbalanced", SHARED / "cifar10", train, sample, spec)
    return {"plain": [], "class weights": ["--set", "class_weights=balanced"],
            "balanced sampler": ["--set", "sampler=balanced"], "focal": ["--set", "loss=focal"],
            "weights + sampler": ["--set", "class_weights=sqrt", "--set", "sampler=balanced"]}


def run(root: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    env = {**os.environ, "COMPETE_ROOT": str(root), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "compete", *args, "--device", "cpu"], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def train_and_predict(root: Path, name: str, options: list[str] = ()) -> dict:
    """Train (3 folds), predict, and read back the run: its folder, summary and timings."""
    train_seconds, out = run(root, "train", name, *options)
    run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
    predict_seconds, _ = run(root, "predict", name, "--run", run_dir.name)
    submission = pd.read_csv(root / "submissions" / name / "submission.csv", dtype=str)
    return {"run_dir": run_dir, "summary": json.loads((run_dir / "summary.json").read_text()),
            "train_s": round(train_seconds, 1), "predict_s": round(predict_seconds, 1),
            "submission": f"{len(submission)} rows, first {submission.iloc[0].tolist()}"}


def oof(result: dict):
    """The run's target, training targets and blended out-of-fold outputs."""
    run_dir, summary = result["run_dir"], result["summary"]
    config = json.loads((run_dir / "config.json").read_text())
    target = target_of_run(config)
    labels = pd.read_csv(Path(config["data"]) / "train.csv", dtype=str)["label"].tolist()
    folder = RunFolder(run_dir)
    members = [np.load(path) for path in folder.oof_paths()]
    outputs = blend_oof(members, np.load(folder.oof_folds_path), summary, target)
    return target, target.encode(labels), outputs


def crossfit(metric: str, target, targets: np.ndarray, outputs: np.ndarray) -> float:
    """Decisions fitted on one half (alternate images), scored on the other, both ways, averaged."""
    halves = [np.arange(len(targets))[h::2] for h in (0, 1)]
    values = []
    for fit_on, score_on in (halves, halves[::-1]):
        decisions = target.fit_decisions(metric, targets[fit_on], outputs[fit_on])
        values.append(score(metric, target, targets[score_on], outputs[score_on], decisions))
    return float(np.mean(values))


def plain_as(kind: str, classes: list[str], probs: np.ndarray):
    """The 10-class run's out-of-fold probabilities as the derived kind's predictions."""
    predicted = np.asarray(classes)[probs.argmax(1)]
    if kind == "a_binary":
        return probs[:, [classes.index(c) for c in sorted(FOOTWEAR)]].sum(1)
    if kind == "a_tags":
        tags = sorted({tag for value in TAGS.values() for tag in value.split()})
        return np.array([[tag in TAGS[c].split() for tag in tags] for c in predicted], dtype=int)
    return np.array([WARMTH[c] for c in predicted])


def apparel(root: Path) -> list[dict]:
    metrics = apparel_competitions(root)
    single = train_and_predict(root, "a_single")
    single_target, _, single_probs = oof(single)
    rows = [{"competition": "a_single", "metric": "accuracy", "kind": "single_label (10 classes)",
             "score": single["summary"]["ensemble_score"], "train_s": single["train_s"],
             "predict_s": single["predict_s"], "submission": single["submission"]}]
    for name in ("a_binary", "a_tags", "a_grades"):
        result = train_and_predict(root, name)
        target, targets, outputs = oof(result)
        summary, metric = result["summary"], metrics[name]
        plain = METRICS[metric].function(targets, plain_as(name, single_target.classes, single_probs))
        rows.append({"competition": name, "metric": metric, "kind": target.kind,
                     "score": summary["ensemble_score"], "default_decisions": summary["score_default_decisions"],
                     "crossfit": crossfit(metric, target, targets, outputs), "plain_recipe": plain,
                     "decisions": summary["decisions"], "train_s": result["train_s"],
                     "predict_s": result["predict_s"], "submission": result["submission"]})
        if name == "a_binary":  # why a log-loss leaderboard must get probabilities
            rows[-1]["log_loss"] = score("log_loss", target, targets, outputs)
            rows[-1]["log_loss_hard_labels"] = score("log_loss", target, targets, (outputs >= 0.5).astype(float))
    return rows


def cifar(root: Path) -> list[dict]:
    rows = []
    for label, options in cifar_competitions(root).items():
        result = train_and_predict(root, "c_imbalanced", options)
        target, targets, outputs = oof(result)
        predicted = outputs.argmax(1)
        recall = [float((predicted[targets == c] == c).mean()) for c in range(target.outputs)]
        rows.append({"competition": "c_imbalanced", "recipe": label, "metric": "f1_macro",
                     "score": result["summary"]["ensemble_score"],
                     "accuracy": score("accuracy", target, targets, outputs),
                     "airplane_recall": recall[target.classes.index("airplane")],
                     "minority_recall": float(np.mean([r for c, r in zip(target.classes, recall) if c != "airplane"])),
                     "train_s": result["train_s"], "predict_s": result["predict_s"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["apparel", "cifar10"])
    parser.add_argument("--scratch", default="/tmp/compete-target-kinds",
                        help="workspace for the derived competitions (not the project)")
    args = parser.parse_args()
    root = Path(args.scratch)
    started, load = time.perf_counter(), os.getloadavg()
    rows = (apparel(root) if args.only != "cifar10" else []) + (cifar(root) if args.only != "apparel" else [])
    context = {"machine": machine(), "load_before": load, "load_after": os.getloadavg(),
               "wall_s": round(time.perf_counter() - started, 1)}
    for row in rows:
        print(json.dumps({k: v for k, v in row.items()}, default=str))
    print(json.dumps(context))
    with open(REPO / "bench" / "results.jsonl", "a") as results:
        for row in rows:
            results.write(json.dumps({**row, **context}, default=str) + "\n")


if __name__ == "__main__":
    main()
