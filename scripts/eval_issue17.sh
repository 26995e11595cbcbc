#!/bin/bash
# Issue 17's comparison of a default-model candidate with the shipped model (docs/quality.md, "Four phrasings"):
# every eval at guidance 5, seed 0, scored with the shipped dual encoder and attribute classifier.
#   bash scripts/eval_issue17.sh MODEL OUT
# Data (built once; DATA=folder holding them, default data):
#   ldmkit data build emoji+avatars $DATA/mix6000 --n avatars=6000                # the GPU phase's avatars
#   ldmkit data build emoji+avatars $DATA/ft --n avatars=2000 && \
#     python scripts/mark_gpu_emoji.py $DATA/ft $DATA/ft-eval                      # taught / held-out emoji
#   ldmkit data build avatars $DATA/fresh-avatars --n 1100 --seed 101             # 1,000 unseen avatars
# OUT gets one folder per eval (metrics.json, report.html), gap.txt (free phrasing vs template captions, paired;
# gap-new-words.txt the same for colour words no caption option teaches)
# and routing.txt (how many free prompts were drawn nearest an emoji). BASE=an earlier OUT (the shipped model's)
# adds vs-base-*.txt (and .json): attribute accuracy against that model's, image by image (scripts/model_gap.py),
# and fidelity-vs-base.txt: FD/KID/CMMD of the 1,000 unseen avatars against that model's, pair by pair
# (scripts/fidelity_gap.py); evals BASE lacks are skipped with a message.
set -euo pipefail
MODEL=$1; OUT=$2
DATA=${DATA:-data}
LDMKIT=${LDMKIT:-ldmkit}
PYTHON=${PYTHON:-python}
SHIPPED=src/ldmkit/default_model
S=(--clip "$SHIPPED" --attributes "$SHIPPED" --seeds 0 --guidance 5)
# EVAL_ARGS: more `ldmkit eval` options for every eval, e.g. EVAL_ARGS="--sampler dpmpp_2m" (the default until 2026-12-04)
read -r -a EXTRA <<< "${EVAL_ARGS:-}"
S+=("${EXTRA[@]}")
mkdir -p "$OUT"
# free phrasing: 200 held-out avatars as people write (the eval pool), and the same attributes in template words
for set in free-avatars free-avatars-templates; do
  $LDMKIT eval "$MODEL" "${S[@]}" --data "$DATA/mix6000" --where source=avatars --prompt-set $set --n 200 -o "$OUT/$set"
done
$PYTHON scripts/free_phrasing_gap.py "$OUT/free-avatars" "$OUT/free-avatars-templates" > "$OUT/gap.txt"
# the same 200 avatars asked for hair / clothing colours in words no caption option teaches (generalisation)
for set in free-avatars-new-words free-avatars-new-words-templates; do
  $LDMKIT eval "$MODEL" "${S[@]}" --data "$DATA/mix6000" --where source=avatars --prompt-set $set --n 200 -o "$OUT/$set"
done
$PYTHON scripts/free_phrasing_gap.py "$OUT/free-avatars-new-words" "$OUT/free-avatars-new-words-templates" \
    > "$OUT/gap-new-words.txt"
$PYTHON scripts/domain_routing.py "$DATA/mix6000" "$OUT/free-avatars" > "$OUT/routing.txt"
# template captions: 200 test avatars, and 1,000 avatars no model was trained on (FD, KID, retrieval and
# attribute accuracy with intervals ~2x tighter than at 200; the avatars builder at seed 101 shares no attribute
# combination with data/mix6000)
$LDMKIT eval "$MODEL" "${S[@]}" --data "$DATA/mix6000" --split test --where source=avatars --n 200 -o "$OUT/avatars"
$LDMKIT eval "$MODEL" "${S[@]}" --data "$DATA/fresh-avatars" --split train --n 1000 -o "$OUT/fresh1000"
# emoji: 100 taught (in the GPU phase's 1,173) and 100 held out from every phase
$LDMKIT eval "$MODEL" "${S[@]}" --data "$DATA/ft-eval" --split train --where source=emoji --where gpu_trained_emoji=yes \
    --n 100 --sample-seed 0 -o "$OUT/taught"
$LDMKIT eval "$MODEL" "${S[@]}" --data "$DATA/ft-eval" --split test --where source=emoji --where gpu_trained_emoji=no \
    --n 100 -o "$OUT/heldout"
if [ -n "${BASE:-}" ]; then
  for e in free-avatars free-avatars-templates free-avatars-new-words free-avatars-new-words-templates avatars \
           fresh1000; do
    if [ ! -f "$BASE/$e/metrics.json" ]; then echo "BASE has no $e eval: vs-base-$e skipped" >&2; continue; fi
    $PYTHON scripts/model_gap.py "$BASE/$e" "$OUT/$e" --json "$OUT/vs-base-$e.json" > "$OUT/vs-base-$e.txt"
  done
  # fidelity, paired by prompt and seed (needs --seed-per-image in both runs' EVAL_ARGS): FD/KID/CMMD, B - A
  if [ -f "$BASE/fresh1000/metrics.json" ]; then
    $PYTHON scripts/fidelity_gap.py "$BASE/fresh1000" "$OUT/fresh1000" > "$OUT/fidelity-vs-base.txt"
  fi
fi
