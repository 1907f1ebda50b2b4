"""Metadata beside the image (issue 26): a competition the image alone cannot solve.

"suits" is built from apparel's labelled images: each row gets a `temperature` (°C, uniform
over [LOW, HIGH]) and the label says whether the garment suits it: each class has a comfortable
window of WINDOW degrees (a coat around 1 °C, a sandal around 24 °C), so every class suits half
the temperatures and the image alone is chance (0.5) by construction. The first --train of the
shuffled labelled images are its training rows, the next --test its test rows (their truth is
kept outside the data folder, to score the submission). Two competitions read the same files:
`suits` (metadata: [temperature]) and `suits_image` (the image alone); both train apparel's
--preset (its members and settings, copied from competition/apparel.yaml), one run per seed,
each timed (`train`, then `predict`) as a user runs it, and its submission scored on the truth.

Everything is written under --scratch (the data, the yamls, the decoded-image caches, the runs);
apparel's files are only read. Prints a markdown table, appends a JSON line per run to
bench/results.jsonl.

    nice -n 5 .venv/bin/python bench/metadata.py --seeds 0 1 2 3 4
    .venv/bin/python bench/metadata.py --train 2000 --test 500 --seeds 0   # a quick check
    .venv/bin/python bench/metadata.py --table   # the table again, from bench/results.jsonl
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench import REPO, machine, timed  # bench.py puts src/ on the path
from honest import spread

SHARED = REPO.parent / "shared" / "datasets" / "apparel"
LOW, HIGH, WINDOW = -10.0, 35.0, 22.5   # temperatures drawn; each class suits a window this wide
COMFORT = {  # apparel class -> the centre of the temperatures it suits (windows stay in [LOW, HIGH])
    "4": 1.25,   # coat
    "9": 4.0,    # ankle boot
    "2": 6.0,    # pullover
    "1": 10.0,   # trouser
    "8": 12.5,   # bag
    "6": 15.0,   # shirt
    "7": 17.0,   # sneaker
    "3": 20.0,   # dress
    "0": 22.0,   # T-shirt
    "5": 23.75,  # sandal
}


def suits(classes: pd.Series, temperature: np.ndarray) -> np.ndarray:
    """"yes" where the temperature lies in the class's window."""
    centre = classes.map(COMFORT).to_numpy()
    return np.where(np.abs(temperature - centre) < WINDOW / 2, "yes", "no")


def data_dir(args) -> Path:
    return args.scratch / "inputs" / f"suits-{args.train}-{args.test}-{args.data_seed}"


def build(args) -> pd.DataFrame:
    """The suits data folder and both yamls under --scratch; returns the test truth (id, label)."""
    data = data_dir(args)
    write_yamls(args)
    truth_path = data.with_suffix(".truth.csv")
    if truth_path.is_file():
        return pd.read_csv(truth_path, dtype=str)
    rng = np.random.default_rng(args.data_seed)
    with zipfile.ZipFile(SHARED / "train.zip") as archive:
        labels = pd.read_csv(io.BytesIO(archive.read("train.csv")), dtype=str)
        rows = labels.iloc[rng.permutation(len(labels))[:args.train + args.test]].reset_index(drop=True)
        rows["temperature"] = rng.uniform(LOW, HIGH, len(rows)).round(1)
        rows["suits"] = suits(rows["label"], rows["temperature"].to_numpy())
        for split, part in (("train", rows[:args.train]), ("test", rows[args.train:])):
            (data / split).mkdir(parents=True, exist_ok=True)
            for image_id in part["id"]:
                (data / split / f"{image_id}.png").write_bytes(archive.read(f"train/{image_id}.png"))
    train, test = rows[:args.train], rows[args.train:]
    train[["id", "suits", "temperature"]].rename(columns={"suits": "label"}).to_csv(data / "train.csv", index=False)
    test[["id", "temperature"]].to_csv(data / "test.csv", index=False)
    test[["id"]].assign(label="no").to_csv(data / "sample_submission.csv", index=False)
    truth = test[["id", "suits"]].rename(columns={"suits": "label"}).reset_index(drop=True)
    truth.to_csv(truth_path, index=False)
    return truth


def write_yamls(args) -> None:
    """suits and suits_image: apparel's files settings and --preset, with and without metadata."""
    apparel = yaml.safe_load((REPO / "competition" / "apparel.yaml").read_text())
    common = {key: apparel[key] for key in ("channels", "image_size", "hflip", "vflip", "image_template")}
    preset = apparel["presets"][args.preset]
    for name, metadata in (("suits", ["temperature"]), ("suits_image", [])):
        settings = {"description": f"apparel garments that suit a temperature ({name})", **common,
                    "train_images": "train", "test_images": "test", "metadata": metadata,
                    "presets": {args.preset: preset}}
        path = args.scratch / "competition" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(settings, sort_keys=False))


def run_once(args, name: str, seed: int, truth: pd.DataFrame) -> dict:
    """train then predict one seed; the submission's accuracy on the truth."""
    data = ["--data", str(data_dir(args)), "--device", args.device]
    command = [sys.executable, "-m", "compete"]
    train_s, out = timed(command + ["train", name, "--preset", args.preset, "--seed", str(seed), *data])
    run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
    predict_s, _ = timed(command + ["predict", name, "--run", run_dir.name, *data])
    submission = pd.read_csv(args.scratch / "submissions" / name / "submission.csv", dtype=str)
    holdout = json.loads((run_dir / "summary.json").read_text())["ensemble_score"]
    return {"bench": "metadata", "name": name, "preset": args.preset, "seed": seed, "train": args.train,
            "test": args.test, "test_accuracy": float((submission["label"].to_numpy() == truth["label"].to_numpy()).mean()),
            "holdout": holdout, "train_wall_s": round(train_s, 1), "predict_wall_s": round(predict_s, 1),
            "machine": machine()}


def table(results: list[dict]) -> str:
    lines = ["| model | test accuracy | hold-out | train s (median) | predict s (median) |",
             "| --- | --- | --- | --- | --- |"]
    for name, label in (("suits", "image + temperature"), ("suits_image", "image only")):
        rows = [r for r in results if r["name"] == name]
        if rows:
            lines.append(f"| {label} | {spread([r['test_accuracy'] for r in rows])} "
                         f"| {spread([r['holdout'] for r in rows])} "
                         f"| {np.median([r['train_wall_s'] for r in rows]):.1f} "
                         f"| {np.median([r['predict_wall_s'] for r in rows]):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast", help="apparel's preset both competitions train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--test", type=int, default=3000)
    parser.add_argument("--data-seed", type=int, default=0, help="the rows drawn and their temperatures")
    parser.add_argument("--scratch", type=Path, default=REPO.parent / "scratch" / "metadata")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table", action="store_true", help="the table again, from bench/results.jsonl")
    args = parser.parse_args()
    if args.table:
        lines = (REPO / "bench" / "results.jsonl").read_text().splitlines()
        print(table([r for r in map(json.loads, lines) if r.get("bench") == "metadata"
                     and (r["preset"], r["train"], r["test"]) == (args.preset, args.train, args.test)]))
        return
    args.scratch = args.scratch.resolve()
    os.environ.update(COMPETE_ROOT=str(args.scratch), PYTHONPATH=str(REPO / "src"))
    truth = build(args)
    results = []
    for seed in args.seeds:
        for name in ("suits", "suits_image"):
            result = run_once(args, name, seed, truth)
            print(json.dumps(result), flush=True)
            with open(REPO / "bench" / "results.jsonl", "a") as log:
                log.write(json.dumps(result) + "\n")
            results.append(result)
    print(table(results))


if __name__ == "__main__":
    main()
