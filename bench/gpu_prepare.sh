#!/usr/bin/env bash
# Put what one device call needs into .data/ (git-ignored), within its 64 MiB limit:
#   bash bench/gpu_prepare.sh apparel    # 44 MB of competition files
#   bash bench/gpu_prepare.sh cifar10    # 59 MB, plus the pretrained MobileNetV2 gzipped (3.9 MB)
# then a device call with carry [".data"] runs `bash bench/gpu.sh .data/NAME NAME`.
# ../shared does not travel: gpu.sh unpacks .data/weights/*.gz where the yaml's `weights:` expect it.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shared=${SHARED:-../shared}
rm -rf .data && mkdir -p .data/weights
cp -r "$shared/datasets/$name" .data/ && chmod -R u+w .data  # ../shared is read-only
# weights the competition's presets name (gzip: fp16 weights shrink to about half)
python3 - "$name" <<'PY' | while read -r path; do gzip -9 -c "$path" > ".data/weights/$(basename "$path").gz"; done
import re, sys, pathlib
text = pathlib.Path(f"competition/{sys.argv[1]}.yaml").read_text()
for path in sorted(set(re.findall(r"^\s*weights:\s*(\S+\.pth)\s*$", text, re.M))):
    print(path)
PY
carried=$(du -sb .data | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo ".data: $carried bytes; with the tracked files $((carried + tracked)) of the 67108864 (64 MiB) a call takes"
[ $((carried + tracked)) -lt 67108864 ] || { echo "too large to travel" >&2; exit 1; }
