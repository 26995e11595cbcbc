#!/bin/bash
# Evaluate a default-model folder the way docs/quality.md reports it (held-out captions only).
#   bash scripts/eval_default.sh MODEL DATA_EMOJI DATA_AVATARS OUT
# DATA_EMOJI: the emoji+avatars dataset the model's fine-tune used (its test split is held out), with a
#   label column gpu_trained_emoji=yes|no marking emoji the GPU run could have trained on (see docs/quality.md);
# DATA_AVATARS: the emoji+avatars dataset with 6,000 avatars (the GPU run's), whose test split is held out.
# EVAL_ARGS: more `ldmkit eval` options for both runs, e.g. EVAL_ARGS="--fit stretch" for the plain-resized real
#   references of the numbers measured before 2026-12-03 (docs/quality.md, "Real references framed as trained").
set -euo pipefail
MODEL=$1; EMOJI=$2; AVATARS=$3; OUT=$4
LDMKIT=${LDMKIT:-ldmkit}
read -r -a EXTRA <<< "${EVAL_ARGS:-}"
mkdir -p "$OUT"
# emoji: 100 held-out prompts, guidance sweep (prompt retrieval among those 100, CLIP score, FD/KID/CMMD)
$LDMKIT eval "$MODEL" --data "$EMOJI" --split test --where source=emoji --where gpu_trained_emoji=no \
    --n 100 --seeds 0 --sweep guidance=1,2,3,5,7 "${EXTRA[@]}" -o "$OUT/emoji"
# avatars: exact attribute accuracy with the model's attribute classifier, plus the same metrics
$LDMKIT eval "$MODEL" --data "$AVATARS" --split test --where source=avatars --n 200 --seeds 0 \
    --sweep guidance=1,3,5 "${EXTRA[@]}" -o "$OUT/avatars"
