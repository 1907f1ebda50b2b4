"""Memory and speed on a synthetic photo competition of N JPEGs (320-640 px, random sizes and
aspects, 3 colour-tinted classes), run as a user runs it, each command in its own process:

1. `compete check`: decodes every image into the on-disk store; run again on the filled store,
   the difference of the two is the decoding time (decode images/s);
2. `compete train`: one pretrained-size member (MobileNetV2, random init) at 224 px with the
   photo augmentation, each epoch capped at --steps batches (`--set epoch_steps`): a 224 px
   step takes seconds on a CPU, and the figures are per step (train images/s, share of the
   training time spent waiting for batches) and memory;
3. `compete predict` on the test images.

Peak memory is sampled every 0.2 s over the whole process tree (the command and its decoding
and loader processes): RSS summed (counts pages shared between a process and its forked
loaders once per process), PSS summed (shared pages split between their users: the memory
actually taken), and the largest single process's RSS. The photos are written once into
--scratch (outside the repository) and reused.

    .venv/bin/python bench/photos.py --images 5000 [--steps 20] [--batch 32] [--device cpu] [--scratch DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench import epoch_log, machine  # noqa: E402

TINTS = [(190, 70, 60), (70, 170, 80), (60, 90, 190)]  # one colour cast per class
TEST_IMAGES = 200
SAMPLE_EVERY = 0.2  # seconds between memory samples


def write_photo(path: Path, seed: int, tint: tuple) -> None:
    """A smooth random picture with the class's colour cast, 320-640 px on each side."""
    rng = np.random.default_rng(seed)
    width, height = (int(side) for side in rng.integers(320, 641, 2))
    coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3)).astype(np.float32)
    image = Image.fromarray(np.clip((coarse + tint) / 2, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())


def write_chunk(folder: str, start: int, stop: int) -> None:
    for i in range(start, stop):
        write_photo(Path(folder) / f"{i:06d}.jpg", i, TINTS[i % 3])


def make_competition(scratch: Path, count: int, steps: int, batch: int) -> str:
    """inputs/photosN/ and competition/photosN.yaml in `scratch`, photos written once."""
    name = f"photos{count}"
    data = scratch / "inputs" / name
    for folder, ids in (("train", range(count)), ("test", range(count, count + TEST_IMAGES))):
        (data / folder).mkdir(parents=True, exist_ok=True)
        if len(list((data / folder).iterdir())) != len(ids):
            chunks = [(str(data / folder), s, min(s + 500, ids.stop)) for s in range(ids.start, ids.stop, 500)]
            with ProcessPoolExecutor() as pool:
                list(pool.map(write_chunk, *zip(*chunks)))
    labels = [f"class{i % 3}" for i in range(count)]
    (data / "train.csv").write_text("id,label\n" + "".join(f"{i:06d},{label}\n" for i, label in enumerate(labels)))
    test_ids = [f"{i:06d}" for i in range(count, count + TEST_IMAGES)]
    (data / "test.csv").write_text("id\n" + "".join(f"{i}\n" for i in test_ids))
    (data / "sample_submission.csv").write_text("id,label\n" + "".join(f"{i},class0\n" for i in test_ids))
    member = {"model": "tv/mobilenet_v2", "normalize": "imagenet", "epochs": 1, "epoch_steps": steps,
              "batch_size": batch, "optimizer": "sgd", "lr": 0.02, "pad_crop": 0,
              "crop_scale": 0.35, "rotate": 10, "jitter": 0.2}
    spec = {"channels": 3, "image_size": 224, "resize": "crop", "image_template": "{id}.jpg",
            "presets": {"bench": {"val_fraction": 0.02, "precision": "fp32", "members": [member]}}}
    (scratch / "competition").mkdir(exist_ok=True)
    (scratch / "competition" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return name


def process_tree(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; zeros once it is gone."""
    try:
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
        pss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:"))
        return rss, pss
    except (OSError, StopIteration):
        return 0, 0


def run_measured(command: list[str], env: dict) -> dict:
    """Run `command`, sampling its process tree's memory; wall seconds, peaks (MiB), output."""
    peaks = {"rss": 0, "pss": 0, "process": 0}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample():
        while process.poll() is None:
            sizes = np.array([memory_kib(pid) for pid in process_tree(process.pid)])
            peaks["rss"], peaks["pss"] = max(peaks["rss"], sizes[:, 0].sum()), max(peaks["pss"], sizes[:, 1].sum())
            peaks["process"] = max(peaks["process"], sizes[:, 0].max())
            time.sleep(SAMPLE_EVERY)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.communicate()[0]
    sampler.join()
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{output[-4000:]}")
    return {"wall_s": round(time.perf_counter() - started, 1), "peak_rss_tree_mib": round(peaks["rss"] / 1024),
            "peak_pss_tree_mib": round(peaks["pss"] / 1024), "peak_rss_process_mib": round(peaks["process"] / 1024),
            "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=20, help="training batches timed")
    parser.add_argument("--batch", type=int, default=32, help="images per training batch (MobileNetV2's "
                        "activations at 224 px take about 90 MiB per image on a CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scratch", default="/tmp/compete-photos")
    args = parser.parse_args()
    scratch = Path(args.scratch)
    started = time.perf_counter()
    name = make_competition(scratch, args.images, args.steps, args.batch)
    print(f"photos ready in {scratch} ({time.perf_counter() - started:.0f} s)", flush=True)
    env = {**os.environ, "COMPETE_ROOT": str(scratch),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    compete = [sys.executable, "-m", "compete"]
    for cached in (scratch / "inputs" / ".cache" / name).glob("*"):
        cached.unlink()  # time the decoding itself
    check = run_measured(compete + ["check", name, "--preset", "bench"], env)
    decode_s = check["wall_s"] - run_measured(compete + ["check", name, "--preset", "bench"], env)["wall_s"]
    train = run_measured(compete + ["train", name, "--preset", "bench", "--device", args.device], env)
    run_dir = Path(train["output"].strip().splitlines()[-1].split("Run saved in ", 1)[1])
    predict = run_measured(compete + ["predict", name, "--run", run_dir.name, "--device", args.device], env)
    record = epoch_log(run_dir)[0]
    result = {
        "bench": "photos", "images": args.images, "test_images": TEST_IMAGES, "machine": machine(),
        "device": args.device, "train_steps": args.steps, "batch": args.batch, "size": 224,
        "decode_images_per_s": round((args.images + TEST_IMAGES) / decode_s),
        "train_images_per_s": round(record["train_images_per_s"], 1), "data_wait": round(record["data_wait"], 3),
        "inference_images_per_s": float(predict["output"].split("inference ")[1].split()[0]),
        **{f"{phase}_{key}": value[key] for phase, value in (("check", check), ("train", train), ("predict", predict))
           for key in ("wall_s", "peak_rss_tree_mib", "peak_pss_tree_mib", "peak_rss_process_mib")},
    }
    print(json.dumps(result, indent=2))
    print(f"Training capped at {args.steps} steps of {args.batch} images (epoch_steps): per-step rates, "
          f"not a full epoch.")
    with open(REPO / "bench" / "results.jsonl", "a") as results:
        results.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
