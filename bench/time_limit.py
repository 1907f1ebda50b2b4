"""`train --time-limit` as a user runs it: for each limit, the whole `train` command timed from
outside (process start to exit), beside the limit, the plan and the hold-out score it reached.

Prints a markdown table for BENCHMARKS.md and appends one JSON line per run to bench/results.jsonl.

    .venv/bin/python bench/time_limit.py apparel --data /work/shared/datasets/apparel --limits 120 300 600
    .venv/bin/python bench/time_limit.py apparel --limits 120 -- --set subset=10000   # extra train options
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import REPO, machine, timed


def run_limit(args, limit: int) -> dict:
    data = ["--data", args.data] if args.data else []
    try:
        seconds, out = timed([sys.executable, "-m", "compete", "train", args.name, "--preset", args.preset,
                              "--device", args.device, "--time-limit", str(limit), *data, *args.extra])
    except SystemExit as failure:  # e.g. a limit refused as too short for one epoch here
        return {"name": args.name, "preset": args.preset, "machine": machine(), "time_limit": limit,
                "error": str(failure).strip().splitlines()[-1]}
    run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
    plan = json.loads((run_dir / "config.json").read_text())["time_plan"]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"name": args.name, "preset": args.preset, "extra": " ".join(args.extra), "machine": machine(),
            "time_limit": limit, "train_wall_s": round(seconds, 1), "share_of_limit": round(seconds / limit, 3),
            "planned_s": round(plan["estimate_s"], 1), "elapsed_before_training_s": round(plan["elapsed_s"], 1),
            "epochs": plan["epochs"], "preset_epochs": plan["preset_epochs"], "folds": plan["folds"],
            "epoch_steps": plan.get("epoch_steps"), "preset_epoch_steps": plan.get("preset_epoch_steps"),
            "members": plan["members"], "score": summary["ensemble_score"], "run": run_dir.name}


def table(results: list[dict]) -> str:
    lines = ["| limit | train wall | share of limit | planned end | epochs x steps (preset) | accuracy | run |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['time_limit']} s | {r['error']} | | | | | |")
            continue
        steps = r.get("epoch_steps") or [None] * len(r["epochs"])
        full = r.get("preset_epoch_steps") or [None] * len(r["epochs"])
        epochs = ", ".join(f"{e} x {s} ({p} x {f})" for e, s, p, f in zip(r["epochs"], steps, r["preset_epochs"], full))
        lines.append(f"| {r['time_limit']} s | {r['train_wall_s']} s | {r['share_of_limit']:.1%} | "
                     f"{r['planned_s']} s | {epochs} | {r['score']:.4f} | {r['run']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--limits", type=int, nargs="+", default=[120, 300, 600], metavar="SECONDS")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data")
    parser.add_argument("--device", default="auto")
    args, extra = parser.parse_known_args()  # the rest goes to `train`, e.g. --set subset=10000
    args.extra = [item for item in extra if item != "--"]
    os.environ["PYTHONPATH"] = str(REPO / "src")
    results = []
    for limit in args.limits:
        results.append(run_limit(args, limit))
        print(json.dumps(results[-1]), flush=True)
        with open(REPO / "bench" / "results.jsonl", "a") as log:
            log.write(json.dumps(results[-1]) + "\n")
    print(f"\n{results[0]['machine']}; train options: {' '.join(args.extra) or 'none'}\n\n{table(results)}")


if __name__ == "__main__":
    main()
