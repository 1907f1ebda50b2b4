"""Hold-out accuracy of members trained in separate runs, alone and blended, as `best` would blend
them: what an ensemble preset would score, measured from runs already made on the same split.

    .venv/bin/python bench/blend_runs.py apparel RUN_A RUN_B:1 [--views identity,hflip] [--data DIR]

RUN[:M] is a run id under submissions/NAME/runs (or a run folder) and its member M (default 0).
All runs must share their hold-out split (same seed, val_fraction and subset). Each member is
scored with its own TTA views, or with --views for all of them. A blend is scored as a run scores
its ensemble: temperatures, weights and decisions fitted on four stratified parts of the hold-out
and scored on the fifth, in turn (cross-fitted, ensemble.cross_fitted); beside it the equal-weight
average and the weights fitted on every hold-out image (what a run's predict would use).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from compete.config import load_competition, run_from_dict  # noqa: E402
from compete.errors import PipelineError  # noqa: E402
from compete.ensemble import combine, cross_fitted, crossfit_parts, fit_ensemble  # noqa: E402
from compete.files import data_dir  # noqa: E402
from compete.data import training_dataset  # noqa: E402
from compete.splits import validation_splits  # noqa: E402
from compete.inference import tta_probs  # noqa: E402
from compete.runs import RunFolder, find_run, load_checkpoint  # noqa: E402
from compete.metrics import score  # noqa: E402
from compete.runtime import Runtime, choose_device  # noqa: E402
from compete.targets import target_of_run  # noqa: E402

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
    images = torch.from_numpy(np.asarray(dataset.train_images[val]).transpose(0, 3, 1, 2).copy()).to(device)
    targets = dataset.train_targets[val]
    target = target_of_run(RunFolder(specs[0][0]).config())
    probs, labels = [], []
    for run_dir, m in specs:
        model, member = load_checkpoint(RunFolder(run_dir).member_path(m, 0), device)
        views = args.views.split(",") if args.views else member.tta
        precision = RunFolder(run_dir).config()["run"]["precision"]
        probs.append(tta_probs(model, images, views, Runtime(device, precision), target))
        labels.append(f"{run_dir.name}:m{m} ({member.model}, {len(views)} views)")
    print(f"{len(targets)} hold-out images (seed {run.seed}, val_fraction {run.val_fraction}); "
          f"{comp.metric}, blends cross-fitted")
    folds = np.zeros(len(targets), np.int64)  # one fold model per member: the hold-out's
    parts = crossfit_parts(folds, dataset.strata[val], run.seed)

    def fit(oof, fit_targets, fit_folds):
        return fit_ensemble(oof, fit_targets, fit_folds, 1, target, comp.metric)
    for size in range(1, len(probs) + 1):
        for group in itertools.combinations(range(len(probs)), size):
            chosen = [probs[i] for i in group]
            if size == 1:
                print(f"{score(comp.metric, target, targets, chosen[0]):.4f}  {labels[group[0]]}")
                continue
            crossed = cross_fitted(fit, chosen, targets, folds, parts, target).score(comp.metric, target, targets)
            everything = fit(chosen, targets, folds)
            equal = score(comp.metric, target, targets, combine(chosen, np.full(size, 1 / size)))
            print(f"{crossed:.4f}  equal weights {equal:.4f}  weights on all rows "
                  f"{np.round(everything.weights, 3).tolist()}  " + " + ".join(labels[i] for i in group))

if __name__ == "__main__":
    try:
        main()
    except PipelineError as error:
        sys.exit(f"error: {error}")
