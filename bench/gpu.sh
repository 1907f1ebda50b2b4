#!/usr/bin/env bash
# GPU benchmarks for one device call (the device machine has torch, timm, pandas, scikit-learn,
# scikit-image, matplotlib and tqdm, and no network; it runs this checkout with python3 directly).
# Usage on the device: bash bench/gpu.sh DATASET_DIR NAME   (NAME: apparel or cifar10)
# Prepare here first (one dataset per call: the checkout travels with at most 64 MiB):
#   mkdir -p .data && cp -r ../shared/datasets/apparel .data/   # .data/ is git-ignored
# then run it through the device tool with carry [".data"]:
#   bash bench/gpu.sh .data/apparel apparel 2>&1 | tee $OUT/gpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; name=$2
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
for preset in fast default best; do
  echo "== $name $preset"
  target=$([ "$name" = apparel ] && echo 0.94 || echo 0.91)
  python3 bench/bench.py "$name" --preset "$preset" --data "$data" --device cuda --target "$target" \
    | tee -a "${OUT:-/tmp}/bench-$name.json"
done
python3 bench/throughput.py "$name" --data "$data" --device cuda | tee -a "${OUT:-/tmp}/bench-$name.json"
