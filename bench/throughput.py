"""Training and inference throughput of a preset's first member, and the share of a training
step spent outside the model (batch gathering and augmentation).

    .venv/bin/python bench/throughput.py apparel [--preset fast] [--data DIR] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("COMPETE_WEIGHTS", str(REPO.parent / "shared" / "weights"))  # presets' weights files
os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "torch_home"))  # torchvision's cache

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from compete.augment import train_transform  # noqa: E402
from compete.config import inputs_dir, load_competition, resolve_run  # noqa: E402
from compete.data import load_train  # noqa: E402
from compete.files import DataDir  # noqa: E402
from compete.inference import predict_logits  # noqa: E402
from compete.models import member_model, net_spec  # noqa: E402
from compete.runtime import Runtime, autocast, choose_device  # noqa: E402

WARMUP = 5   # steps before timing (kernel selection, allocator)
STEPS = 30   # timed steps


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def time_steps(step, device: torch.device) -> float:
    for _ in range(WARMUP):
        step()
    started = clock(device)
    for _ in range(STEPS):
        step()
    return (clock(device) - started) / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    comp = load_competition(args.name)
    run = resolve_run(comp, args.preset)
    member = run.members[0]
    device = choose_device(args.device)
    dataset = load_train(comp, DataDir(Path(args.data) if args.data else inputs_dir() / args.name))
    images = torch.from_numpy(np.asarray(dataset.train_images).transpose(0, 3, 1, 2).copy()).to(device)
    labels = torch.from_numpy(dataset.train_targets).to(device)
    model = member_model(member, net_spec(comp, dataset.train_images, dataset.target.outputs), device, run.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    context = autocast(device, run.precision)
    generator = torch.Generator(device=device).manual_seed(0)
    batch_size = member.batch_size

    def data_step():
        index = torch.randint(0, len(labels), (batch_size,), device=device, generator=generator)
        batch = train_transform(images[index], member, comp.hflip, comp.vflip, generator)
        return batch.contiguous(memory_format=torch.channels_last), labels[index]

    fixed = data_step()

    def model_step(batch=None):
        inputs, targets = batch or fixed
        with context():
            loss = F.cross_entropy(model(inputs).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    full = time_steps(lambda: model_step(data_step()), device)
    model_only = time_steps(model_step, device)
    data_only = time_steps(data_step, device)
    test = images[:min(len(images), 10000)]
    started = clock(device)
    predict_logits(model, test, Runtime(device, run.precision))
    inference = len(test) / (clock(device) - started)
    result = {"name": args.name, "preset": args.preset, "model": member.model, "device": str(device),
              "batch_size": batch_size, "train_images_per_s": round(batch_size / full),
              "inference_images_per_s": round(inference),
              "share_outside_model": round(max(full - model_only, data_only) / full, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
