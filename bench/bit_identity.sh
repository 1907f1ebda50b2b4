#!/usr/bin/env bash
# The same seeds give the same weights: train five seeded digits runs and hash every checkpoint's
# weights (bench/weights_hash.py). Record on the commit before a restructuring, compare after:
#   bench/bit_identity.sh --out REFERENCE.json      bench/bit_identity.sh --compare REFERENCE.json
# Covers the hold-out, 2 folds with a refit and EMA, --lr auto (lr-find), photo augmentation on
# the device with mixup, and on the loader threads with select: best. (--time-limit is not
# deterministic: its epochs depend on measured speed.)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=() labels=()
train() {  # LABEL then train options
  local label=$1; shift
  ./run.sh train digits --seed 0 "$@" > "/tmp/bit_identity-$label.log" 2>&1
  runs+=("$(sed -n 's/^Run saved in //p' "/tmp/bit_identity-$label.log")") labels+=("$label")
}
train default-seed0
train fast-folds2-refit-ema --preset fast --folds 2 --refit --set ema=0.99
train fast-lr-auto --preset fast --lr auto
train fast-rotate-device-mixup --preset fast --set rotate=10 --set photo_augment=device --set mixup=0.2
train fast-crop-loader-best --preset fast --set crop_scale=0.8 --set photo_augment=loader --set select=best
.venv/bin/python bench/weights_hash.py "${runs[@]}" --label "${labels[@]}" "$@"
