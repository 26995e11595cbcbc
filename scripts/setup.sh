#!/usr/bin/env bash
# Set up everything ldmkit needs on a fresh Debian/Ubuntu machine: system packages (when root),
# a virtual environment in .venv with ldmkit installed in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

# System packages: the Noto Color Emoji font is the source of the built-in `emoji` dataset.
if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji >/dev/null
  else
    echo "note: fonts-noto-color-emoji is not installed (needed only for 'ldmkit data build emoji')" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.ldmkit-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[test,data,serve]"
  # open_clip ships the real CLIP BPE vocabulary; --no-deps avoids its torchvision dependency.
  "$VENV/bin/pip" install -q --no-deps open_clip_torch==3.3.0
  touch "$STAMP"
fi
