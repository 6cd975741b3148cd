#!/bin/sh
# make demo: the embedded default, end to end with what exists so far. lmforge trains a
# byte-level BPE tokenizer on its own demo corpus (data/demo), writes a tiny Qwen2-shaped model
# sized to it, previews the demo dataset through the chat template with the trained tokens
# marked, and scores a sentence. (Fine-tuning joins this demo with `lmforge train`.)
set -eu
LMF=${1:-build/lmforge}
OUT=out/demo
"$LMF" env
echo
"$LMF" tokenizer train --corpus data/demo/corpus.txt --vocab-size 600 --out "$OUT/tokenizer"
"$LMF" init-model --arch qwen2 --preset tiny --seed 1 --tokenizer "$OUT/tokenizer" --out "$OUT/model"
echo
"$LMF" data preview examples/train_lora/demo_lora_sft.yaml --n 2
echo
TEXT="The fox lives near the forest."
IDS=$(printf '%s' "$TEXT" | "$LMF" tokenizer encode --tokenizer "$OUT/model" | tr -d '[] ')
echo "\"$TEXT\" -> ids $IDS"
echo "scoring it with the untrained model (NLL near ln(vocab) expected until training exists):"
"$LMF" score --model "$OUT/model" --ids "$IDS"
