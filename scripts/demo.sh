#!/usr/bin/env bash
# The main job: generate an image from a prompt with the default model shipped inside the package
# (issue 6), writing the image, its denoising trajectory and the parameters (in the PNG) to outputs/.
# An install without a default model (a source checkout before `ldmkit model ship`) falls back to a
# model folder with RANDOM weights (`ldmkit model init`): the pipeline runs end to end, but the image
# is noise-like; it says so on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LDMKIT=$VENV/bin/ldmkit
PROMPT="a smiling face with sunglasses"
if "$VENV/bin/python" -c 'import sys; from ldmkit.cli.generate import default_model_dir
sys.exit(not (default_model_dir() / "model_index.json").is_file())'; then
  "$LDMKIT" generate "$PROMPT" --seed 0 --trajectory -o outputs
else
  echo "demo: this install has no default model yet, so this uses RANDOM weights (noise-like image);" \
       "make the default model with: ldmkit model ship RUN --out src/ldmkit/default_model" >&2
  MODEL=models/demo-small64
  if [ ! -f "$MODEL/model_index.json" ]; then
    "$LDMKIT" model init --preset small64 "$MODEL"
  fi
  "$LDMKIT" generate "$PROMPT" --model "$MODEL" --steps 20 --seed 0 --trajectory -o outputs
fi
