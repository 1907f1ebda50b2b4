#!/usr/bin/env bash
# Put what the device calls need into .data/ (git-ignored), each call within its 64 MiB limit:
#   bash bench/gpu_prepare.sh apparel cifar10
# copies each competition's files to .data/NAME and gzips the pretrained weights its presets name
# into .data/weights (../shared does not travel; gpu.sh unpacks them into the weights folder there),
# and torchvision's cache files its pretrained members start from into .data/torch_home (from
# $TORCH_HOME, else ../shared/torch_home), then prints each call's carry list. The presets' weights files are read from $COMPETE_WEIGHTS,
# else ../shared/weights.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
export COMPETE_WEIGHTS=${COMPETE_WEIGHTS:-$shared/weights} TORCH_HOME=${TORCH_HOME:-$shared/torch_home}
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
mkdir -p .data/weights
for name in "$@"; do
  rm -rf ".data/$name"
  cp -r "$shared/datasets/$name" .data/ && chmod -R u+w ".data/$name"  # ../shared is read-only
  carry=(".data/$name")
  # the weights files this competition's presets name (fp16 weights gzip to about half)
  weights=$(PYTHONPATH=src python3 bench/weights_files.py "$name")
  for path in $weights; do
    packed=".data/weights/$(basename "$path").gz"
    gzip -9 -c "$path" > "$packed"
    carry+=("$packed")
  done
  # torchvision's cache files of the pretrained members (copied under the same names)
  cached=$(PYTHONPATH=src python3 -c "from compete.config import load_competition, resolve_run
from compete.model_names import model_library
from compete.models import torchvision_cache_file
comp = load_competition('$name')
print(*{torchvision_cache_file(model_library(m.model)[1]) for p in comp.presets
        for m in resolve_run(comp, p).members if m.pretrained and model_library(m.model)[0] == 'torchvision'}, sep='\n')")
  for path in $cached; do
    [ -f "$path" ] || { echo "$name: $path is not in the cache (that member downloads it)"; continue; }
    mkdir -p .data/torch_home/hub/checkpoints && cp "$path" .data/torch_home/hub/checkpoints/
    carry+=(".data/torch_home")
  done
  size=$(( $(du -scb "${carry[@]}" | tail -1 | cut -f1) + tracked ))
  echo "$name: carry [$(printf '"%s", ' "${carry[@]}" | sed 's/, $//')]: $size bytes with the tracked files (limit 67108864)"
  [ "$size" -lt 67108864 ] || { echo "$name: too large for one call" >&2; exit 1; }
done
