#!/usr/bin/env bash
# A photo competition as a new user meets it: `init` on the downloaded bees files (one folder per
# class, no train CSV), then the default preset (torchvision's pretrained MobileNetV2, from
# $TORCH_HOME) against the same preset from scratch (--set pretrained=false, and once more with every layer trained), and its
# 5-fold cross-validation. Each line of
# bench/results.jsonl holds the score and the wall times (bench/bench.py).
#   bash bench/bees.sh [DATA_DIR] [PRESET]      # default: ../shared/datasets/bees, default
# Runs in a scratch workspace: nothing is written into the project's competition/ or inputs/.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:-../shared/datasets/bees}"); preset=${2:-default}
python=${PYTHON:-.venv/bin/python}
export COMPETE_ROOT=${COMPETE_ROOT:-$(mktemp -d)} PYTHONPATH=$PWD/src
export TORCH_HOME=${TORCH_HOME:-$(realpath ../shared/torch_home)}  # torchvision's cache: MobileNetV2
echo "workspace $COMPETE_ROOT, torchvision cache $TORCH_HOME"
"$python" -m compete init bees --data "$data" --force
"$python" -m compete check bees --data "$data" | tail -1
"$python" bench/bench.py bees --data "$data" --preset "$preset" --device cpu
"$python" bench/bench.py bees --data "$data" --preset "$preset" --device cpu -- --set pretrained=false
# from scratch with every layer trained and BatchNorm learning its statistics: a fairer baseline
"$python" bench/bench.py bees --data "$data" --preset "$preset" --device cpu -- --set pretrained=false \
  --set freeze_epochs=0 --set freeze_bn=false
"$python" bench/bench.py bees --data "$data" --preset "$preset" --device cpu -- --folds 5
