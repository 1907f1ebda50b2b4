"""Does a scan competition score what its photos score? apparel, stored again as 12-bit DICOM.

Every labelled apparel image is written twice into a scratch workspace (never the repository):
as its PNG, and as a 12-bit CT-like DICOM (stored value 16 x pixel, rescale intercept -1024, the
file's window [1016, 4080] mapping -1024..3056 back to 0..255; every third one MONOCHROME1,
stored inverted). As bench/honest.py does, the last 10% of each class is kept aside as the scored
pseudo-test (its test images are read from the train folder); the rest trains the preset, with
its own hold-out. For each format and seed: `train`, `predict`, the pseudo-test accuracy, the
train wall time, and whether the two formats' trained weights are identical (bench/weights_hash.py).
Also: whether the two decoded image stores are equal pixel for pixel, and the decoding time per
image (one process, median of three passes over --decode-images files) and into a fresh store.

    .venv/bin/python bench/dicom.py --preset fast --seeds 0 1 2     # about 15 minutes on 2 cores
    .venv/bin/python bench/dicom.py --seeds 0 -- --set subset=2000 --epochs 1   # a quick check
    .venv/bin/python bench/dicom.py --decode-only     # the files and the decoding figures alone
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from bench import REPO, SHARED_TORCH_HOME, SHARED_WEIGHTS, machine  # bench.py puts src/ on the path
from honest import kept_split, pseudo_test_score, spread, train
from weights_hash import run_hashes
from compete.config import cache_dir, load_competition  # noqa: E402
from compete.data import decoder, load_images  # noqa: E402
from compete.files import DataDir  # noqa: E402
from compete.scans import dicom_bytes  # noqa: E402

SOURCE = REPO.parent / "shared" / "datasets" / "apparel"
FORMATS = {"png": "{id}.png", "dcm": "{id}.dcm"}  # competition name suffix -> image template
STORED_PER_LEVEL = 16        # 12-bit: stored value = 16 x the 8-bit pixel (0..4080)
INTERCEPT = -1024            # rescale intercept: stored 0 is -1024 "HU"
WINDOW = (1016, 4080)        # center, width: -1024..3056 (stored 0..4080) back to 0..255


def scan_of(png: bytes, image_id: int) -> bytes:
    """The apparel PNG as a 12-bit DICOM; every third id MONOCHROME1 (dark stored high)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint16) * STORED_PER_LEVEL
    inverted = image_id % 3 == 0
    return dicom_bytes(STORED_PER_LEVEL * 255 - pixels if inverted else pixels,
                       PhotometricInterpretation="MONOCHROME1" if inverted else "MONOCHROME2",
                       RescaleIntercept=INTERCEPT, WindowCenter=WINDOW[0], WindowWidth=WINDOW[1])


def write_data(root: Path) -> tuple[pd.DataFrame, float]:
    """inputs/apparel_png and inputs/apparel_dcm (train folder, CSVs for the kept split) and
    their yamls; returns the kept (id, label) rows and the seconds spent writing DICOMs."""
    spec = yaml.safe_load((REPO / "competition" / "apparel.yaml").read_text())
    folders = {suffix: root / "inputs" / f"apparel_{suffix}" for suffix in FORMATS}
    written, dicom_seconds = (folders["dcm"] / "train.csv").exists(), 0.0
    with zipfile.ZipFile(SOURCE / "train.zip") as archive:
        labels = pd.read_csv(io.BytesIO(archive.read("train.csv")), dtype=str)
        for member in ([] if written else archive.namelist()):
            if not member.endswith(".png"):
                continue
            png = archive.read(member)
            for suffix, folder in folders.items():
                path = folder / member.replace(".png", f".{suffix}")
                path.parent.mkdir(parents=True, exist_ok=True)
                started = time.perf_counter()
                path.write_bytes(png if suffix == "png" else scan_of(png, int(Path(member).stem)))
                dicom_seconds += (time.perf_counter() - started) * (suffix == "dcm")
    kept = kept_split(labels, "label")
    for suffix, folder in folders.items():
        labels[~kept].to_csv(folder / "train.csv", index=False)
        labels.loc[kept, ["id"]].to_csv(folder / "test.csv", index=False)
        labels.loc[kept, ["id"]].assign(label=0).to_csv(folder / "sample_submission.csv", index=False)
        own = {**spec, "image_template": FORMATS[suffix], "test_images": "train"}
        (root / "competition" / f"apparel_{suffix}.yaml").write_text(yaml.safe_dump(own, sort_keys=False))
    return labels.loc[kept, ["id", "label"]], dicom_seconds


def decode_timing(root: Path, count: int) -> dict:
    """Per format: median seconds per image over three passes decoding `count` files in one
    process, the seconds decoding every training image into a fresh store (all cores), and
    whether the two formats' stores are equal."""
    found, stores = {}, {}
    for suffix in FORMATS:
        comp = load_competition(f"apparel_{suffix}")
        data = DataDir(root / "inputs" / f"apparel_{suffix}")
        ids = data.read_csv("train.csv")["id"].astype(str).tolist()
        paths = [f"train/{FORMATS[suffix].format(id=i)}" for i in ids[:count]]
        decode, passes = decoder(comp, data), []
        for _ in range(3):
            started = time.perf_counter()
            for path in paths:
                decode(path)
            passes.append((time.perf_counter() - started) / len(paths))
        found[f"{suffix}_decode_us"] = round(statistics.median(passes) * 1e6, 1)
        for stale in (cache_dir() / comp.name).glob("train-*"):  # timed from the files, not a store
            stale.unlink()
        started = time.perf_counter()
        stores[suffix] = np.asarray(load_images(comp, data, "train", ids, "train").images)
        found[f"{suffix}_store_s"] = round(time.perf_counter() - started, 1)
    found["stores_equal"] = bool(np.array_equal(stores["png"], stores["dcm"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scratch", type=Path, default=Path("/work/scratch/dicom"))
    parser.add_argument("--decode-images", type=int, default=2000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-only", action="store_true", help="write the data and time decoding; train nothing")
    args, extra = parser.parse_known_args()  # the rest goes to every `train`
    args.extra = [item for item in extra if item != "--"]
    root = args.scratch.resolve()
    (root / "competition").mkdir(parents=True, exist_ok=True)
    os.environ.update({"COMPETE_ROOT": str(root), "PYTHONPATH": str(REPO / "src")})
    os.environ.setdefault("COMPETE_WEIGHTS", str(SHARED_WEIGHTS))
    os.environ.setdefault("TORCH_HOME", str(SHARED_TORCH_HOME))
    kept, dicom_seconds = write_data(root)
    timing = {**decode_timing(root, args.decode_images), "dicom_write_s": round(dicom_seconds, 1)}
    print(json.dumps(timing), flush=True)
    if args.decode_only:
        return
    runs = {suffix: [] for suffix in FORMATS}
    for seed in args.seeds:
        for suffix in FORMATS:
            name = f"apparel_{suffix}"
            run = pseudo_test_score(args, name, kept, train(args, name, "--seed", str(seed)), "folds")
            weights = run_hashes(run["run_dir"]) if "run_dir" in run else None
            runs[suffix].append({**run, "seed": seed, "weights": weights})
            print(json.dumps(runs[suffix][-1], default=str), flush=True)
    results = {"machine": machine(), "preset": args.preset, "extra": " ".join(args.extra), **timing, "runs": runs}
    (root / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\n{machine()}; --preset {args.preset}; seeds {args.seeds}; {' '.join(args.extra) or ''}\n")
    print("| format | kept 10% accuracy, mean ± sd | per seed | hold-out | train wall (s) | decode per image |")
    print("| --- | --- | --- | --- | --- | --- |")
    for suffix, label in (("png", "PNG 8-bit"), ("dcm", "DICOM 12-bit, 1/3 MONOCHROME1")):
        good = [r for r in runs[suffix] if "error" not in r]
        print(f"| {label} | {spread([r['pseudo_test'] for r in good])} | "
              f"{', '.join(format(r['pseudo_test'], '.4f') for r in good)} | {spread([r['score'] for r in good])} | "
              f"{spread([r['train_wall_s'] for r in good], 1)} | {timing[f'{suffix}_decode_us']} µs |")
    same = [png["weights"] is not None and png["weights"] == dcm["weights"]
            for png, dcm in zip(runs["png"], runs["dcm"])]
    print(f"\ndecoded stores equal: {timing['stores_equal']}; trained weights identical, per seed: {same}")


if __name__ == "__main__":
    main()
