"""Hold-out accuracy of members trained in separate runs, alone and blended, as `best` would blend
them: what an ensemble preset would score, measured from runs already made on the same split.

    .venv/bin/python bench/blend_runs.py apparel RUN_A RUN_B:1 [--views identity,hflip] [--data DIR]

RUN[:M] is a run id under submissions/NAME/runs (or a run folder) and its member M (default 0).
All runs must share their hold-out split (same seed, val_fraction and subset). Each member is
scored with its own TTA views, or with --views for all of them; blends use the pipeline's
calibrated, log-loss-fitted weights (`fit_blend`), and equal weights beside them.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

from compete.config import PipelineError, load_competition, run_from_dict  # noqa: E402
from compete.ensemble import blend, fit_blend  # noqa: E402
from compete.files import data_dir  # noqa: E402
from compete.batches import to_tensor  # noqa: E402
from compete.data import training_dataset, validation_splits  # noqa: E402
from compete.inference import tta_probs  # noqa: E402
from compete.runs import RunFolder, find_run, load_checkpoint  # noqa: E402
from compete.runtime import choose_device  # noqa: E402

SPLIT_KEYS = ("seed", "val_fraction", "subset", "folds")


def member_spec(name: str, spec: str) -> tuple[Path, int]:
    run, _, member = spec.rpartition(":") if ":" in spec else (spec, "", "0")
    return find_run(name, run), int(member)


def shared_split(runs: list[Path]):
    """The first run's settings, once every run is known to split as it does; else an error
    naming the first run that differs."""
    configs = [run_from_dict(RunFolder(run).config()["run"]) for run in runs]
    settings = [{key: getattr(config, key) for key in SPLIT_KEYS} for config in configs]
    for run, setting in zip(runs, settings):
        if setting != settings[0]:
            raise PipelineError(f"Run {run.name} was split differently ({setting}) from "
                                f"{runs[0].name} ({settings[0]}): its hold-out images differ.")
    if configs[0].folds > 1:
        raise PipelineError("Only hold-out runs can be blended here (k-fold runs: use their oof_m*.npy).")
    return configs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("members", nargs="+", metavar="RUN[:M]")
    parser.add_argument("--views", help="comma-separated TTA views for every member")
    parser.add_argument("--data")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    comp = load_competition(args.name)
    specs = [member_spec(comp.name, spec) for spec in args.members]
    run = shared_split([run_dir for run_dir, _ in specs])
    dataset = training_dataset(comp, run, data_dir(comp.name, args.data))
    [(_, val)] = validation_splits(dataset.train_targets, run, dataset.groups)
    device = choose_device(args.device)
    images = to_tensor(dataset.train_images[val], device)
    targets = dataset.train_targets[val]
    probs, labels = [], []
    for run_dir, m in specs:
        model, member = load_checkpoint(RunFolder(run_dir).member_path(m, 0), device)
        views = args.views.split(",") if args.views else member.tta
        precision = RunFolder(run_dir).config()["run"]["precision"]
        probs.append(tta_probs(model, images, views, device, precision))
        labels.append(f"{run_dir.name}:m{m} ({member.model}, {len(views)} views)")
    print(f"{len(targets)} hold-out images (seed {run.seed}, val_fraction {run.val_fraction})")
    for size in range(1, len(probs) + 1):
        for group in itertools.combinations(range(len(probs)), size):
            chosen = [probs[i] for i in group]
            temperatures, weights = fit_blend(chosen, targets)
            fitted = (blend(chosen, temperatures, weights).argmax(1) == targets).mean()
            equal = (np.mean(chosen, 0).argmax(1) == targets).mean()
            extra = f"  equal weights {equal:.4f}  weights {np.round(weights, 3).tolist()}" if size > 1 else ""
            print(f"{fitted:.4f}{extra}  " + " + ".join(labels[i] for i in group))


if __name__ == "__main__":
    try:
        main()
    except PipelineError as error:
        sys.exit(f"error: {error}")
