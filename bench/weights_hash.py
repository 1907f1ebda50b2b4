"""SHA-256 of the weights of every checkpoint in run folders: the bit-identity check of a
restructuring (the same seeds give the same weights before and after).

Hashes each state dict's tensors in key order (name, dtype, shape and bytes), never the file
bytes, which also hold paths, times and the serialization format.

    python bench/weights_hash.py RUN_DIR [RUN_DIR ...] --label NAME --out FILE   # record
    python bench/weights_hash.py RUN_DIR [RUN_DIR ...] --label NAME --compare FILE  # check
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

import bench  # noqa: F401 (bench.py puts src/ on the path)


def state_dict_of(path: Path) -> dict:
    """The weights of a member checkpoint, whatever its serialization."""
    if path.suffix == ".safetensors":  # run format 3 on: the checkpoint's tensors and settings
        from compete.modelfiles import load_model_file
        return load_model_file(path)["state_dict"]
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["state_dict"]


def weights_sha256(state_dict: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_hashes(run: Path) -> dict:
    """{checkpoint file name: weights hash} of a run's finished member checkpoints."""
    paths = sorted(p for p in (run / "members").iterdir()
                   if not p.name.startswith("resume") and p.suffix in (".pt", ".safetensors"))
    return {p.stem: weights_sha256(state_dict_of(p)) for p in paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--label", nargs="+", required=True, help="a name per run, e.g. default-seed0")
    parser.add_argument("--out", type=Path, help="write {label: {checkpoint: sha256}} to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare against this JSON file")
    args = parser.parse_args()
    hashes = {label: run_hashes(run) for label, run in zip(args.label, args.runs)}
    print(json.dumps(hashes, indent=2))
    if args.out:
        args.out.write_text(json.dumps(hashes, indent=2) + "\n")
    if args.compare:
        reference = json.loads(args.compare.read_text())
        differ = [label for label in hashes if reference.get(label) != hashes[label]]
        print("identical" if not differ else f"DIFFERENT: {differ}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
