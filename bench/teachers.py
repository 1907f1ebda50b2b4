"""What a teacher adds, scored where the labels are known: pseudo-labels on the test images and
distillation, against the same preset trained on the labels alone.

The last 10% of each class of the train CSV become the test images of a scratch competition
NAME_kept (bench/honest.py's pseudo-test; its data folder holds copies of the source files).
Each run is trained there, predicted with `predict`, and its test_probs.npy scored against the
kept labels with the competition's metric.

    baseline   `train NAME_kept --preset P --seed S`, then `predict`: the label-only run
    pseudo     the same with `--pseudo BASELINE`: the kept images join training with the baseline's
               predictions as soft targets (its validation part never sees them)
    teacher    `train NAME_kept --preset T --seed S` (--teacher-preset, default gpu-fast: a larger
               ResNet-style net than default's CNN; --teacher-folds K trains it on K folds, for
               out-of-fold outputs on every train image), then `predict`
    distill    P with `--distill TEACHER`: the teacher's out-of-fold outputs on the train images
               and its predictions on the kept images, mixed with the labels

A run already logged in SCRATCH/teachers.jsonl with the same command, whose folder still exists under
--scratch, is reused rather than trained again (CPU runs are deterministic: the same command gives
the same weights).

    .venv/bin/python bench/teachers.py apparel --stages baseline pseudo --seeds 0 1 2
    .venv/bin/python bench/teachers.py apparel --stages teacher distill --seeds 0
    .venv/bin/python bench/teachers.py apparel --teacher-preset ensemble --teacher-folds 5 --stages teacher distill
    .venv/bin/python bench/teachers.py apparel --stages teacher distill --student-set distill_weight=0.2
    .venv/bin/python bench/teachers.py apparel --table
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from bench import REPO, SHARED_TORCH_HOME, SHARED_WEIGHTS, machine, timed  # bench.py puts src/ on the path
from honest import SHARED, pseudo_test_competition, spread
from compete.metrics import score  # noqa: E402
from compete.runs import RunFolder  # noqa: E402
from compete.targets import target_of_run  # noqa: E402

STAGES = ("baseline", "pseudo", "teacher", "distill")
NEEDS = {"pseudo": "baseline", "distill": "teacher"}  # the stage whose run teaches it


def compete(*arguments: str) -> tuple[float, str]:
    """Wall seconds and output of `python -m compete ARGUMENTS`."""
    return timed([sys.executable, "-m", "compete", *arguments])


def logged_runs(args) -> list[dict]:
    """Every result logged under --scratch (teachers.jsonl, beside the runs it names)."""
    if not args.log.exists():
        return []
    return [json.loads(line) for line in args.log.read_text().splitlines()]


def trained_and_scored(args, stage: str, seed: int, options: list[str], kept, preset: str | None = None) -> dict:
    """`train` with OPTIONS then `predict`, the kept 10% scored; a logged result of the same
    command whose run folder still exists is returned instead of training again."""
    command = ["train", args.kept_name, "--preset", preset or args.preset, "--seed", str(seed), "--device",
               args.device, *options, *args.extra]
    for result in reversed(logged_runs(args)):
        if result.get("command") == command and "error" not in result and Path(result["run_dir"]).is_dir():
            return {**result, "reused": True}
    result = {"bench": "teachers", "name": args.name, "preset": args.preset, "stage": stage, "seed": seed,
              "command": command, "machine": machine()}
    try:
        result["train_wall_s"], out = compete(*command)
        run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
        result["predict_wall_s"], said = compete("predict", args.kept_name, "--run", run_dir.name,
                                                 "--device", args.device)
        result["inference_images_per_s"] = float(said.split("inference ", 1)[1].split(" images/s")[0])
    except SystemExit as failure:
        return {**result, "error": str(failure).strip().splitlines()[-1][:300]}
    folder = RunFolder(run_dir)
    summary, target = folder.summary(), target_of_run(folder.config())
    probs = np.load(run_dir / "test_probs.npy")
    truth = target.encode(kept.iloc[:, 1].tolist())
    result.update(run_dir=str(run_dir), run=run_dir.name, score=summary["ensemble_score"],
                  kept_score=score(summary["metric"], target, truth, probs, summary.get("decisions")))
    with open(args.log, "a") as log:
        log.write(json.dumps(result, default=str) + "\n")
    return result


def run_stage(args, stage: str, seed: int, kept) -> dict:
    if stage == "baseline":
        return trained_and_scored(args, stage, seed, [], kept)
    if stage == "teacher":
        folds = ["--folds", str(args.teacher_folds)] if args.teacher_folds else []
        return trained_and_scored(args, stage, seed, folds, kept, args.teacher_preset)
    teacher = run_stage(args, NEEDS[stage], seed, kept)  # reused from the log when it was run
    if "error" in teacher:
        return {"stage": stage, "seed": seed, "error": f"its teacher failed: {teacher['error']}"}
    student = [option for setting in args.student_set for option in ("--set", setting)]
    return trained_and_scored(args, stage, seed, [f"--{stage}", teacher["run"], *student], kept)


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| stage | kept 10%, mean ± sd over seeds | per seed | local score | train wall (s) | predict wall (s) "
             "| inference images/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for stage, runs in results.items():
        good = [r for r in runs if "error" not in r]
        per_seed = ", ".join(f"{r['kept_score']:.4f}" if "error" not in r else "failed" for r in runs)
        lines.append(f"| {stage} | {spread([r['kept_score'] for r in good])} | {per_seed} "
                     f"| {spread([r['score'] for r in good])} "
                     f"| {spread([r['train_wall_s'] for r in good], 1)} | {spread([r['predict_wall_s'] for r in good], 1)} "
                     f"| {spread([r['inference_images_per_s'] for r in good if 'inference_images_per_s' in r], 0)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--teacher-preset", default="gpu-fast", help="the teacher stage's preset")
    parser.add_argument("--teacher-folds", type=int, help="the teacher stage's --folds (default: its preset's hold-out)")
    parser.add_argument("--student-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="settings of the pseudo and distill stages alone (e.g. distill_weight=0.2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--data", help="the competition's files (default: ../shared/datasets/NAME)")
    parser.add_argument("--scratch", type=Path, help="workspace for runs and the pseudo-test (default: /tmp/teachers)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--table", action="store_true", help="train nothing: the table of the logged runs")
    args, extra = parser.parse_known_args()  # the rest goes to every `train`
    args.extra = [item for item in extra if item != "--"]
    args.data = str(Path(args.data or SHARED / args.name).resolve())
    root = (args.scratch or Path("/tmp/teachers")).resolve()
    (root / "competition").mkdir(parents=True, exist_ok=True)
    (root / "competition" / f"{args.name}.yaml").write_text((REPO / "competition" / f"{args.name}.yaml").read_text())
    args.kept_name, kept = pseudo_test_competition(args, root)
    args.log = root / "teachers.jsonl"
    os.environ.update({"COMPETE_ROOT": str(root), "PYTHONPATH": str(REPO / "src")})
    os.environ.setdefault("COMPETE_WEIGHTS", str(SHARED_WEIGHTS))
    os.environ.setdefault("TORCH_HOME", str(SHARED_TORCH_HOME))
    results: dict[str, list[dict]] = {}
    for stage in args.stages:
        for seed in args.seeds:
            if args.table:
                found = [r for r in logged_runs(args) if r["name"] == args.name and r["stage"] == stage
                         and r["seed"] == seed and r["preset"] == args.preset]
                results.setdefault(stage, []).extend(found[-1:])
                continue
            result = run_stage(args, stage, seed, kept)
            print(json.dumps(result, default=str), flush=True)
            results.setdefault(stage, []).append(result)
    print(f"\n{machine()}; {args.name} --preset {args.preset}; seeds {args.seeds}\n\n{table(results)}")


if __name__ == "__main__":
    main()
