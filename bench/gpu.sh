#!/usr/bin/env bash
# Every GPU figure of one competition in one device call: throughput of the default member, each
# preset timed as a user runs it (bench/bench.py: train, then predict), and, for apparel, the
# CUDA tests (tests/test_gpu.py). Each step has its own time limit, so a slow one cannot eat the
# rest; the log, the result lines and every run's epoch log land in $OUT.
#
# The device machine has torch, timm, pandas, scikit-learn, scikit-image, matplotlib, tqdm,
# pytest and hypothesis, and no network; it runs this checkout with its python3 directly.
# One dataset travels per call (at most 64 MiB), so the two competitions take two calls. With the
# default 300 s deadline both fit one session's 15 minutes of device time, the machine's start
# included. Here, once:
#   bash bench/gpu_prepare.sh apparel cifar10     # fills the git-ignored .data/, prints the carry lists
# then two device calls, one right after the other (the machine stays warm for 30 s), timeout_s 330:
#   carry [".data/apparel"]:  bash bench/gpu.sh .data/apparel apparel
#   carry [".data/cifar10", ".data/torch_home"]:
#                             bash bench/gpu.sh .data/cifar10 cifar10
set -uo pipefail
cd "$(dirname "$0")/.."
data=$1; name=$2; deadline=${3:-300}   # seconds for the whole script: two calls fit 15 minutes
out=${OUT:-/tmp/gpu-$name}; mkdir -p "$out"
log=$out/gpu-$name.log
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 COMPETE_ROOT=$PWD COMPETE_WEIGHTS=$PWD/weights \
  TORCH_HOME=$PWD/.data/torch_home  # torchvision's cache, as gpu_prepare.sh filled it
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script itself on a machine without a GPU

step() {  # step SECONDS COMMAND...: run it with a time limit, log it, go on whatever happens
  local limit=$1 left=$((deadline - SECONDS)); shift
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then echo "== skipped (out of time): $*" | tee -a "$log"; return; fi
  echo "== $(date +%T) [limit ${limit}s] $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v 'batch/s\|img/s\]' | tee -a "$log"
  echo "== exit ${PIPESTATUS[0]}" | tee -a "$log"
}

# ../shared does not travel: unpack the weights gpu_prepare.sh packed into the weights folder
python3 - "$name" <<'PY' 2>&1 | tee -a "$log"
import gzip, shutil, sys
from pathlib import Path
sys.path.insert(0, "bench")
from weights_files import weights_files
for wanted in weights_files(sys.argv[1]):
    packed = Path(".data/weights") / f"{wanted.name}.gz"
    if not wanted.is_file() and packed.is_file():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(packed) as source, open(wanted, "wb") as target:
            shutil.copyfileobj(source, target)
        print(f"unpacked {packed} to {wanted}")
    elif not wanted.is_file():
        print(f"weights {wanted} missing: run bench/gpu_prepare.sh {sys.argv[1]}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" | tee -a "$log"
if [ "$name" = apparel ]; then quick=0.94; best=0.96; else quick=0.91; best=0.94; fi
# most wanted first. The first step decodes the PNGs into the cache once, so that the timed runs
# start from it, as every run after a competitor's first does. Limits: seconds at most per step.
if [ "$name" = apparel ]; then limits=(45 45 120 30 25 25); else limits=(45 60 150 30 25 25); fi
step ${limits[0]} python3 bench/throughput.py "$name" --preset default --data "$data" --device $device
step ${limits[1]} python3 bench/bench.py "$name" --preset gpu-fast --data "$data" --device $device --target $quick
step ${limits[2]} python3 bench/bench.py "$name" --preset best --data "$data" --device $device --target $best
step ${limits[3]} python3 bench/bench.py "$name" --preset default --data "$data" --device $device --target $quick
step ${limits[4]} python3 bench/bench.py "$name" --preset fast --data "$data" --device $device --target $quick
step ${limits[5]} python3 bench/throughput.py "$name" --preset gpu-fast --data "$data" --device $device
if [ "$name" = cifar10 ]; then  # gpu-fast (40 epochs) scored 0.9125 on the CPU: fewer epochs, if time is short
  step 45 python3 bench/bench.py "$name" --preset gpu-fast --data "$data" --device $device --target $quick \
    -- --epochs 30
fi
if [ "$name" = apparel ]; then
  step 100 python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu.py
fi
cp bench/results.jsonl "$out/results-$name.jsonl" 2>/dev/null
# every run's settings, epoch log and summary, also of a step stopped at its limit
find "submissions/$name/runs" -name '*.json' -o -name 'log.jsonl' 2>/dev/null | tar czf "$out/runs-$name.tgz" -T -
echo "== done $(date +%T)" | tee -a "$log"
