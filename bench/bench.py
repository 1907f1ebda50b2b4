"""Benchmark a preset as a user runs it: `./run.sh train` then `./run.sh predict`, timed.

Reports wall time of each command, final hold-out score, time (training seconds, from the epoch
log) to first reach --target, training throughput (images/s over the epochs), inference
throughput, and the machine. Appends one JSON line per run to bench/results.jsonl.

    .venv/bin/python bench/bench.py apparel --preset fast --target 0.92 [--data DIR] [-- --set k=v]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"  # presets' weights files, unless $COMPETE_WEIGHTS
SHARED_TORCH_HOME = REPO.parent / "shared" / "torch_home"  # torchvision's cache, unless $TORCH_HOME


def machine() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()}-core {cpu} CPU, capability {torch.backends.cpu.get_cpu_capability()} " \
           f"(torch {torch.__version__})"


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def epoch_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--target", type=float, help="validation accuracy to time")
    parser.add_argument("--data")
    parser.add_argument("--device", default="auto")
    args, extra = parser.parse_known_args()  # the rest goes to `train`, e.g. --set ema=0.999
    args.extra = [item for item in extra if item != "--"]
    data = ["--data", args.data] if args.data else []
    common = [sys.executable, "-m", "compete"]
    os.environ["PYTHONPATH"] = str(REPO / "src")
    os.environ.setdefault("COMPETE_WEIGHTS", str(SHARED_WEIGHTS))
    os.environ.setdefault("TORCH_HOME", str(SHARED_TORCH_HOME))
    train_seconds, out = timed(common + ["train", args.name, "--preset", args.preset,
                                         "--device", args.device, *data, *args.extra])
    run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
    predict_seconds, predict_out = timed(common + ["predict", args.name, "--run", run_dir.name,
                                         "--device", args.device, *data])
    summary = json.loads((run_dir / "summary.json").read_text())
    log = epoch_log(run_dir)
    reached = [r["seconds"] for r in log if args.target and r.get("val_acc", 0) >= args.target]
    speeds = [r["train_images_per_s"] for r in log]
    inference = float(predict_out.split("inference ")[1].split()[0])
    result = {
        "name": args.name, "preset": args.preset, "extra": " ".join(args.extra), "machine": machine(),
        "score": summary["ensemble_score"], "members": [(m["model"], m["score"]) for m in summary["members"]],
        "weights": summary["weights"], "train_wall_s": round(train_seconds, 1),
        "predict_wall_s": round(predict_seconds, 1),
        "total_wall_s": round(train_seconds + predict_seconds, 1),
        "target": args.target, "seconds_to_target": reached[0] if reached else None,
        "train_images_per_s": round(sum(speeds) / len(speeds)), "inference_images_per_s": inference,
        "run": run_dir.name,
    }
    print(json.dumps(result, indent=2))
    with open(REPO / "bench" / "results.jsonl", "a") as results:
        results.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
