#!/usr/bin/env bash
# Every GPU figure of one competition in one device call: throughput of the default member, each
# preset timed as a user runs it (bench/bench.py: train, then predict), and, for apparel, the
# CUDA tests (tests/test_gpu.py). Each step has its own time limit, so a slow one cannot eat the
# rest; the log and the result lines land in $OUT.
#
# The device machine has torch, timm, pandas, scikit-learn, scikit-image, matplotlib, tqdm,
# pytest and hypothesis, and no network; it runs this checkout with its python3 directly.
# Prepare here (one dataset per call: what travels is at most 64 MiB; .data/ is git-ignored):
#   mkdir -p .data && rm -rf .data/* && cp -r ../shared/datasets/apparel .data/
# then, through the device tool with carry [".data"] and timeout_s 600:
#   bash bench/gpu.sh .data/apparel apparel
# and the same for cifar10 in a second call on the warm machine.
set -uo pipefail
cd "$(dirname "$0")/.."
data=$1; name=$2; deadline=${3:-560}   # seconds for the whole script: inside one 600 s call
out=${OUT:-/tmp/gpu-$name}; mkdir -p "$out"
log=$out/gpu-$name.log
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 COMPETE_ROOT=$PWD
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script itself on a machine without a GPU

step() {  # step SECONDS COMMAND...: run it with a time limit, log it, go on whatever happens
  local limit=$1 left=$((deadline - SECONDS)); shift
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then echo "== skipped (out of time): $*" | tee -a "$log"; return; fi
  echo "== $(date +%T) [limit ${limit}s] $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v 'batch/s\|img/s\]' | tee -a "$log"
  echo "== exit ${PIPESTATUS[0]}" | tee -a "$log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" | tee -a "$log"
if [ "$name" = apparel ]; then quick=0.94; best=0.96; else quick=0.91; best=0.94; fi
# most wanted first. The first step decodes the PNGs into the cache once, so that the timed runs
# start from it, as every run after a competitor's first does.
step 90 python3 bench/throughput.py "$name" --preset default --data "$data" --device $device
step 60 python3 bench/bench.py "$name" --preset gpu-fast --data "$data" --device $device --target $quick
step 240 python3 bench/bench.py "$name" --preset best --data "$data" --device $device --target $best
step 60 python3 bench/bench.py "$name" --preset default --data "$data" --device $device --target $quick
step 45 python3 bench/bench.py "$name" --preset fast --data "$data" --device $device --target $quick
step 45 python3 bench/throughput.py "$name" --preset gpu-fast --data "$data" --device $device
if [ "$name" = cifar10 ]; then  # gpu-fast (40 epochs) scored 0.9125 on the CPU: fewer epochs, if time is short
  step 60 python3 bench/bench.py "$name" --preset gpu-fast --data "$data" --device $device --target $quick \
    -- --epochs 30
fi
if [ "$name" = apparel ]; then
  step 150 python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu.py
fi
cp bench/results.jsonl "$out/results-$name.jsonl" 2>/dev/null
echo "== done $(date +%T)" | tee -a "$log"
