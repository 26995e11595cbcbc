#!/usr/bin/env bash
# The main job: generate an image from a prompt with the default model shipped inside the package
# (issue 6), writing the image, its denoising trajectory (PNG grid + GIF) and the parameters (in the PNG)
# to outputs/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/ldmkit" generate "a smiling face with sunglasses" --seed 0 --trajectory -o outputs
