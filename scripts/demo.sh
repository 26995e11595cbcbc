#!/usr/bin/env bash
# The main job: generate an image from a prompt.
# There is no trained default model in the package yet (issue 6), so this makes a model folder with
# RANDOM weights (`ldmkit model init`) and generates with it: the pipeline runs end to end, but the
# image is noise-like until a trained model is shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
LDMKIT=${VENV:-.venv}/bin/ldmkit
MODEL=models/demo-small64
if [ ! -f "$MODEL/model_index.json" ]; then
  "$LDMKIT" model init --preset small64 "$MODEL"
fi
"$LDMKIT" generate "a grinning face with sunglasses" --model "$MODEL" --steps 20 --seed 0 --trajectory -o outputs
