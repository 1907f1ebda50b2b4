"""How far the local score can be trusted: seed-repeated runs of one preset, as a user runs them.

    holdout   the preset's hold-out score (`ensemble_score`, cross-fitted), one run per seed
    kfold     the --folds K cross-validation score, one run per seed
    refit     a pseudo-test: the last stratified KEPT share of the labelled images (the last rows
              of each class in the train CSV) is kept aside in a scratch competition whose test
              images they are; one `train --refit` on the rest with a hold-out of 1/9 (80% / 10%
              of all images, then each member trained again on the 90%); its kept images
              predicted and scored three times (`predict --models`): by the 80% models, by the
              refit models, and by both half and half; and the gain of refit per seed

Each figure is the mean and standard deviation over the seeds (--seed of train: the split, the
initialization, the subset). Everything is written under --scratch (a workspace with the
competition's yaml, the decoded-image cache, the runs, and the pseudo-test competition whose
data folder holds derived CSVs and copies of the source files); the source data is only read.
Prints a markdown table and appends one JSON line per run to bench/results.jsonl.

    .venv/bin/python bench/honest.py apparel --preset default --seeds 0 1 2
    .venv/bin/python bench/honest.py apparel --parts refit -- --set subset=2000 --epochs 1   # a quick check
    .venv/bin/python bench/honest.py apparel --table    # the table again, from bench/results.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench import REPO, SHARED_TORCH_HOME, SHARED_WEIGHTS, machine, timed  # bench.py puts src/ on the path
from compete.config import load_competition  # noqa: E402
from compete.files import DataDir  # noqa: E402
from compete.metrics import score  # noqa: E402
from compete.runs import RunFolder  # noqa: E402
from compete.targets import target_of_run  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"  # the source data of a competition by default
KEPT = 0.1                                     # share of the labelled images kept as pseudo-test
VALIDATION = str(1 / 9)                        # hold-out of the other 90%: 10% of all images
PARTS = ("holdout", "kfold", "refit")


def train(args, name: str, *options: str) -> dict:
    """`train` then its run's summary; {"error": ...} when the command fails."""
    try:
        seconds, out = timed([sys.executable, "-m", "compete", "train", name, "--preset", args.preset,
                              "--device", args.device, *options, *args.extra])
    except SystemExit as failure:
        return {"error": str(failure).strip().splitlines()[-1][:300]}
    run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
    summary = RunFolder(run_dir).summary()
    return {"run_dir": run_dir, "train_wall_s": round(seconds, 1), "score": summary["ensemble_score"],
            "in_sample": summary.get("ensemble_score_in_sample")}


def kept_split(labels: pd.DataFrame, label_column: str) -> np.ndarray:
    """Which rows are kept aside: the last KEPT share of each class, in the CSV's order."""
    from_end = labels.groupby(label_column).cumcount(ascending=False)
    sizes = labels.groupby(label_column)[label_column].transform("size")
    return (from_end < (sizes * KEPT).round()).to_numpy()


def pseudo_test_competition(args, root: Path) -> tuple[str, pd.DataFrame]:
    """A scratch competition NAME_kept whose training images are all but the kept ones and whose
    test images are the kept ones (read from the train folder); returns its name and the kept
    (id, label) rows in test order."""
    comp, source = load_competition(args.name), DataDir(args.data)
    labels = source.read_csv(comp.train_csv)
    kept = kept_split(labels, comp.label_column)
    name, data = f"{args.name}_kept", root / "inputs" / f"{args.name}_kept"
    data.mkdir(parents=True, exist_ok=True)
    for path in Path(args.data).iterdir():  # images, zips: copied (the pipeline reads nothing a link
        copy = data / path.name                # takes outside the data folder), once
        if path.suffix.lower() != ".csv" and not copy.exists():
            (shutil.copytree if path.is_dir() else shutil.copyfile)(path, copy)
    labels[~kept].to_csv(data / "train.csv", index=False)
    test = labels.loc[kept, [comp.id_column]]
    test.to_csv(data / "test.csv", index=False)
    sample = source.read_csv(comp.sample_submission)
    pd.DataFrame({column: test[comp.id_column] if column == comp.id_column else sample[column].iloc[0]
                  for column in sample.columns}).to_csv(data / "sample_submission.csv", index=False)
    spec = yaml.safe_load((REPO / "competition" / f"{args.name}.yaml").read_text())
    spec.update({"train_csv": "train.csv", "test_csv": "test.csv", "sample_submission": "sample_submission.csv",
                 "test_images": spec["train_images"]})
    (root / "competition" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return name, labels.loc[kept, [comp.id_column, comp.label_column]]


def pseudo_test_score(args, name: str, kept: pd.DataFrame, result: dict, models: str) -> dict:
    """Predict the kept images with the run's `models` (predict --models) and score them with the
    competition's metric."""
    if "error" in result:
        return result
    run_dir = result["run_dir"]
    timed([sys.executable, "-m", "compete", "predict", name, "--run", run_dir.name, "--device", args.device,
           "--models", models])
    config, summary = RunFolder(run_dir).config(), RunFolder(run_dir).summary()
    target = target_of_run(config)
    probs = np.load(run_dir / "test_probs.npy")
    targets = target.encode(kept.iloc[:, 1].tolist())
    assert len(probs) == len(targets), (len(probs), len(targets))
    return {**result, "pseudo_test": score(summary["metric"], target, targets, probs, summary.get("decisions"))}


def run_seed(args, part: str, seed: int, kept_name: str, kept: pd.DataFrame) -> dict:
    data, seeded = ["--data", args.data], ["--seed", str(seed)]
    if part == "holdout":
        return train(args, args.name, *data, *seeded)
    if part == "kfold":
        return train(args, args.name, *data, *seeded, "--folds", str(args.folds))
    run = train(args, kept_name, "--set", f"val_fraction={VALIDATION}", *seeded, "--refit")
    return {**pseudo_test_score(args, kept_name, kept, run, "folds"),
            "refit": pseudo_test_score(args, kept_name, kept, run, "refit"),
            "blend": pseudo_test_score(args, kept_name, kept, run, "blend")}


def spread(values: list, digits: int = 4) -> str:
    """Mean ± sample standard deviation (0 for one value) and the count."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    deviation = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {deviation:.{digits}f} (n={len(values)})"


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| protocol | score, mean ± sd over seeds | per seed | train wall (s) |", "| --- | --- | --- | --- |"]

    def row(label, runs, key):
        good = [r for r in runs if "error" not in r]
        per_seed = ", ".join(f"{r[key]:.4f}" if "error" not in r else "failed" for r in runs)
        wall = spread([r["train_wall_s"] for r in good], digits=1).split(" (")[0]
        lines.append(f"| {label} | {spread([r[key] for r in good])} | {per_seed} | {wall} |")

    def differences(label, values):
        lines.append(f"| {label} | {spread(values)} | {', '.join(f'{v:+.4f}' for v in values) or '-'} | |")
    for part, runs in results.items():
        if part == "holdout":
            row("hold-out (preset's val_fraction), cross-fitted", runs, "score")
        elif part == "kfold":
            row(f"{runs[0]['folds']}-fold CV, cross-fitted", runs, "score")
        else:
            good = [r for r in runs if "error" not in r]
            refits = [r["refit"] for r in good]
            row("80% train: 1/9 hold-out score", runs, "score")
            row("80% train: kept 10% (pseudo-test)", runs, "pseudo_test")
            differences("gap: 1/9 hold-out minus kept 10%", [r["score"] - r["pseudo_test"] for r in good])
            row("refit on 90%: kept 10%", refits, "pseudo_test")
            differences("gain of --refit on the kept 10%", [r["refit"]["pseudo_test"] - r["pseudo_test"]
                                                             for r in good if "error" not in r["refit"]])
            row("80% and refit models half and half: kept 10%", [r["blend"] for r in good], "pseudo_test")
            differences("gain of the blend on the kept 10%", [r["blend"]["pseudo_test"] - r["pseudo_test"]
                                                               for r in good if "error" not in r["blend"]])
            errors = {r.get("error") or r["refit"].get("error") for r in runs} - {None}
            lines += [f"| (failed: {error}) | | | |" for error in errors]
    return "\n".join(lines)


def logged(args) -> dict[str, list[dict]]:
    """Per part, the latest line of bench/results.jsonl for each seed (of this competition and
    preset), in the order of --seeds."""
    latest = {}
    for line in (REPO / "bench" / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        if result.get("name") == args.name and result.get("preset") == args.preset and result.get("part") in PARTS:
            latest[result["part"], result["seed"]] = result
    return {part: runs for part in args.parts
            if (runs := [latest[part, seed] for seed in args.seeds if (part, seed) in latest])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--data", help="the competition's files (default: ../shared/datasets/NAME)")
    parser.add_argument("--scratch", type=Path, help="workspace for runs and the pseudo-test (default: /tmp/honest)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--table", action="store_true",
                        help="train nothing: print the table of the latest logged run of each part and seed")
    args, extra = parser.parse_known_args()  # the rest goes to every `train`, e.g. --set subset=2000
    args.extra = [item for item in extra if item != "--"]
    if args.table:
        print(table(logged(args)))
        return
    args.data = str(Path(args.data or SHARED / args.name).resolve())
    root = (args.scratch or Path("/tmp/honest")).resolve()
    (root / "competition").mkdir(parents=True, exist_ok=True)
    (root / "competition" / f"{args.name}.yaml").write_text((REPO / "competition" / f"{args.name}.yaml").read_text())
    kept_name, kept = pseudo_test_competition(args, root) if "refit" in args.parts else (None, None)
    os.environ.update({"COMPETE_ROOT": str(root), "PYTHONPATH": str(REPO / "src")})
    os.environ.setdefault("COMPETE_WEIGHTS", str(SHARED_WEIGHTS))
    os.environ.setdefault("TORCH_HOME", str(SHARED_TORCH_HOME))
    results = {}
    for part in args.parts:
        for seed in args.seeds:
            result = {"name": args.name, "preset": args.preset, "part": part, "seed": seed, "folds": args.folds,
                      "extra": " ".join(args.extra), "machine": machine(),
                      **run_seed(args, part, seed, kept_name, kept)}
            results.setdefault(part, []).append(result)
            line = json.dumps(result, default=str)
            print(line, flush=True)
            with open(REPO / "bench" / "results.jsonl", "a") as log:
                log.write(line + "\n")
    print(f"\n{machine()}; {args.name} --preset {args.preset}; seeds {args.seeds}; "
          f"train options: {' '.join(args.extra) or 'none'}\n\n{table(results)}")


if __name__ == "__main__":
    main()
