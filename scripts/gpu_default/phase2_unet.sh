#!/bin/bash
# Phase B on the (still warm) GPU machine: the UNet stage of configs/default.yaml, GPU-scaled.
set -u
STEPS=${1:-2800}; BATCH=${2:-256}; END=${3:-560}
T0=$(date +%s)
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
test -f /tmp/minilm/model.safetensors || { echo "phase A files are gone"; exit 3; }
rm -rf /tmp/run/dataset; python3 .gpu2/build.py || exit 4
python3 - <<'PY'
import shutil, pathlib
from safetensors.torch import load_file, save_file
src, dst = pathlib.Path(".gpu2/vae_from"), pathlib.Path("/tmp/vae_from")
shutil.rmtree(dst, ignore_errors=True); shutil.copytree(src, dst)
for f in dst.rglob("*.safetensors"):
    sd = load_file(f); save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, f)
(dst / "text_encoder").mkdir()
for name in ("config.json", "model.safetensors"):
    shutil.copy(f"/tmp/minilm/{name}", dst / "text_encoder" / name)
PY
R=/tmp/run
rm -rf $R/unet
timeout -s INT $(( END - ($(date +%s) - T0) )) python3 -m ldmkit train unet --config configs/default-unet.yaml --out $R/unet \
   --set data.path=$R/dataset --set model.vae_from=/tmp/vae_from --set train.mixed_precision=bf16 \
   --set train.steps=$STEPS --set train.batch_size=$BATCH --set train.warmup_steps=200 \
   --set train.checkpoint_every=500 --set train.validate_every=1000 2>&1 | grep -v "it/s]\|step/s]" | tail -12
echo "unet done at $(( $(date +%s) - T0 )) s"
python3 - <<'PY'
import os, shutil, tarfile, pathlib
from safetensors.torch import load_file, save_file
R = pathlib.Path("/tmp/run"); P = pathlib.Path("/tmp/pack2"); shutil.rmtree(P, ignore_errors=True); P.mkdir()
final = R / "unet" / "final"
if not final.is_dir():
    cks = sorted((R / "unet" / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    final = [c for c in cks if (c / "COMPLETE").exists()][-1] / "model"
print("packing", final)
shutil.copytree(final, P / "model", ignore=shutil.ignore_patterns("text_encoder"))
for f in P.rglob("*.safetensors"):
    sd = load_file(f); save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, f)
d = P / "logs"; d.mkdir()
for f in (R / "unet").glob("*"):
    if f.is_file(): shutil.copy(f, d)
for v in sorted((R / "unet").glob("validation/*"))[-2:]:
    shutil.copytree(v, d / v.name)
with tarfile.open("/tmp/pack2.tar", "w") as t: t.add(P, arcname="pack")
print(os.path.getsize("/tmp/pack2.tar"))
PY
split -b 15M -d /tmp/pack2.tar $OUT/pack.tar.
echo "total $(( $(date +%s) - T0 )) s"
