#!/bin/sh
# make demo: the embedded default, end to end. lmforge trains a byte-level BPE tokenizer on its
# own demo corpus (data/demo), writes a tiny Qwen2-shaped model sized to it, pre-trains it on
# the corpus (full fine-tuning, stage pt), fine-tunes a LoRA adapter on the demo Q&A set (stage
# sft, chatml template), then answers questions from its training set greedily.
set -eu
LMF=${1:-build/lmforge}
OUT=out/demo
rm -rf "$OUT"
"$LMF" env
echo
"$LMF" tokenizer train --corpus data/demo/corpus.txt --vocab-size 600 --out "$OUT/tokenizer"
"$LMF" init-model --arch qwen2 --preset tiny --seed 1 --tokenizer "$OUT/tokenizer" --out "$OUT/model"
echo
"$LMF" data preview examples/train_lora/demo_lora_sft.yaml model_name_or_path="$OUT/model" --n 1
echo
echo "== pre-training on the demo corpus (stage pt, full) =="
"$LMF" train examples/train_full/demo_full_pt.yaml logging_steps=100
echo
echo "== LoRA fine-tuning on the demo Q&A (stage sft) =="
"$LMF" train examples/train_lora/demo_lora_sft.yaml
echo
echo "== answers of the fine-tuned model (greedy) =="
"$LMF" chat examples/train_lora/demo_lora_sft.yaml adapter_name_or_path="$OUT/lora" temperature=0 max_new_tokens=48 \
    --prompt "What color is the fox?" --prompt "Where does the owl live?" --prompt "What does the bear carry?" \
    --prompt "What is 6 plus 4?" --prompt "What is lmforge?"
