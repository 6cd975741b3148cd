#!/bin/sh
# make demo: until the trainer lands, write the tiny preset model and score a sequence with it.
set -eu
LMF=${1:-build/lmforge}
OUT=${DEMO_DIR:-out/demo}
"$LMF" env
echo
"$LMF" init-model --arch llama --preset tiny --seed 1 --out "$OUT/tiny-llama"
echo
echo "scoring ids 1,15,27,42,99,7,3 with $OUT/tiny-llama (random weights: NLL near ln(512) = 6.24)"
"$LMF" score --model "$OUT/tiny-llama" --ids 1,15,27,42,99,7,3
