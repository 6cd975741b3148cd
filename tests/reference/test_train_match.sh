#!/bin/sh
# `lmforge train` against an independent PyTorch trainer (ref_trainer.py: transformers + peft +
# torch.optim.AdamW + transformers.get_scheduler + clip_grad_norm_) fed the very micro-batches
# lmforge trained on (LMF_TRAIN_DUMP_BATCHES). Tiny preset, f32, dropout 0, 30 steps of batch 2 x
# accumulation 2, cosine schedule with warmup, weight decay, clipping that acts on some steps only:
#   (a) LoRA SFT continuing a PEFT adapter made by peft (non-zero B), right-padded batches, an
#       example truncated by cutoff_len;
#   (b) full SFT with packing (segment-masked sequences, restarted positions, padding).
# Per-step loss within 1e-4 relative (trainer_log.jsonl's 6 digits resolve ~5e-6), lr and grad
# norm too, and every final weight within 1e-4 (max|ours - ref| / max|ref| per tensor). Then the
# trained adapter loads with peft's PeftModel.from_pretrained and gives lmforge's logits (1e-4).
# The comparison must catch small errors: a reference with lr x 1.002, or with decay on norms,
# has to fail it.
. "$(dirname "$0")/common.sh"
# One thread everywhere: the model is tiny, and on a busy 2-core machine two spinning OpenMP threads
# per process made each run ~10x slower.
export OMP_NUM_THREADS=1
cd "$WORK"
D="$LMF_SRC/data/demo"
demo_model llama 3
check "non-trivial norm weights" "$TOOL" randomize --model model --seed 11
# 42 alpaca records: the demo's first 40, one far longer than cutoff_len, one with an input.
"$LMF_PY" - "$D/demo_sft.json" <<'PY'
import json, sys
recs = json.load(open(sys.argv[1]))[:40]
recs.insert(7, {"instruction": "Tell me everything you know.", "input": "",
                "output": " ".join(r["output"] for r in recs[:24])})
recs.insert(20, {"instruction": "Repeat the last answer.", "input": recs[3]["output"], "output": recs[5]["output"]})
json.dump(recs, open("sft.json", "w"), indent=1)
json.dump({"match_sft": {"file_name": "sft.json"}}, open("dataset_info.json", "w"))
PY
# The adapter both trainers start from, made by peft: all seven projections, r 4, alpha 16, B ~ N(0, 0.05^2).
# (B much larger than that makes the LoRA delta dwarf the base weights and the 30 steps chaotic: even
# torch in f32 against torch in f64 then drifts past 1e-4.)
check "initial adapter from peft" "$LMF_PY" "$REF/make_hf_model.py" --adapter-for model --out init_lora --r 4 --alpha 16 \
    --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --seed 5 --b-std 0.05
cat > lora.yaml <<YAML
model_name_or_path: model
adapter_name_or_path: init_lora
stage: sft
do_train: true
finetuning_type: lora
lora_dropout: 0
dataset: match_sft
dataset_dir: .
template: chatml
cutoff_len: 48
output_dir: lora
logging_steps: 1
per_device_train_batch_size: 2
gradient_accumulation_steps: 2
learning_rate: 2.0e-3
max_steps: 30
lr_scheduler_type: cosine
warmup_ratio: 0.1
weight_decay: 0.1
max_grad_norm: 2.0
seed: 7
threads: 1
YAML
sed -e '/^adapter_name_or_path/d' -e '/^lora_dropout/d' -e 's/finetuning_type: lora/finetuning_type: full/' \
    -e 's/cutoff_len: 48/cutoff_len: 96/' -e 's/output_dir: lora/output_dir: full/' \
    -e 's/learning_rate: .*/learning_rate: 1.0e-3/' -e 's/max_grad_norm: .*/max_grad_norm: 3.0/' lora.yaml > full.yaml
echo "packing: true" >> full.yaml

train() { # train NAME: lmforge train NAME.yaml, dumping its micro-batches to NAME.batches.jsonl
    rm -f "$1.batches.jsonl"
    LMF_TRAIN_DUMP_BATCHES="$1.batches.jsonl" "$LMF" train "$1.yaml" > "$1.log" 2>&1
    _rc=$?
    cat "$1.log"
    return $_rc
}
batches_have() { # batches_have FILE what...: padding | packed | no-packing
    "$LMF_PY" - "$@" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
pad = sum(s == -1 for r in rows for row in r["seg"] for s in row)
multi = sum(len({s for s in row if s >= 0}) > 1 for r in rows for row in r["seg"])
print(f"{len(rows)} micro-batches, {pad} padded positions, {multi} rows holding several sequences")
ok = {"padding": pad > 0, "packed": multi > 0, "no-packing": multi == 0}
sys.exit(0 if all(ok[w] for w in sys.argv[2:]) else 1)
PY
}
compare() { # compare NAME OURS_WEIGHTS INITIAL_WEIGHTS [REF_DIR]
    "$LMF_PY" "$REF/compare_train.py" --ours-log "$1/trainer_log.jsonl" --ours-weights "$1/$2" --ref "${4:-ref_$1}" \
        --initial "$3" --min-clipped 3 --min-unclipped 3 --loss-tol 1e-4 --weight-tol 1e-4 --norm-tol 1e-4
}

check "(a) lmforge train: LoRA SFT from the peft adapter" train lora
grep -q "cut to cutoff_len 48" lora.log && ! grep -q " 0 cut to cutoff_len" lora.log ||
    { echo "FAIL (a): no example was truncated by cutoff_len"; fail=$((fail + 1)); }
check "(a) batches: right-padded, unpacked" batches_have lora.batches.jsonl padding no-packing
# lmforge must continue init_lora, not a fresh adapter (B = 0, the YAML's default rank 8): the step-1
# loss below already tells, the rank and alpha it saved say so directly.
check "(a) the adapter trained is init_lora's (r 4, alpha 16)" "$LMF_PY" -c "import json, sys; c = json.load(open('lora/adapter_config.json')); print(c['r'], c['lora_alpha']); sys.exit(0 if (c['r'], c['lora_alpha']) == (4, 16) else 1)"
check "(a) reference trainer (peft)" "$LMF_PY" "$REF/ref_trainer.py" --config lora.yaml --batches lora.batches.jsonl --out ref_lora
check "(a) LoRA: per-step loss and final adapter == reference" compare lora adapter_model.safetensors init_lora/adapter_model.safetensors
cat "$WORK/out.txt"

check "(b) lmforge train: full SFT, packed" train full
check "(b) batches: packed and padded" batches_have full.batches.jsonl padding packed
check "(b) reference trainer (transformers)" "$LMF_PY" "$REF/ref_trainer.py" --config full.yaml --batches full.batches.jsonl --out ref_full
check "(b) full: per-step loss and final weights == reference" compare full model.safetensors model/model.safetensors
cat "$WORK/out.txt"

# The comparison catches small errors in the optimisation (here put into the reference).
"$LMF_PY" "$REF/ref_trainer.py" --config lora.yaml --batches lora.batches.jsonl --out ref_lora_lr --perturb lr > /dev/null 2>&1
check_fails "a learning rate 0.2% off is caught (LoRA)" compare lora adapter_model.safetensors init_lora/adapter_model.safetensors ref_lora_lr
"$LMF_PY" "$REF/ref_trainer.py" --config full.yaml --batches full.batches.jsonl --out ref_full_wd --perturb decay-all > /dev/null 2>&1
check_fails "weight decay on norms is caught (full)" compare full model.safetensors model/model.safetensors ref_full_wd

# The trained adapter in peft: PeftModel.from_pretrained on the transformers model gives lmforge's
# logits (and loss, LoRA gradients) on the longest row lmforge trained on.
"$LMF_PY" - lora.batches.jsonl > row.json <<'PY'
import json, sys
best = max(((row_ids, row_lab, row_seg) for r in map(json.loads, open(sys.argv[1]))
            for row_ids, row_lab, row_seg in zip(r["ids"], r["labels"], r["seg"])),
           key=lambda x: sum(s >= 0 for s in x[2]))
n = sum(s >= 0 for s in best[2])
print(json.dumps({"input_ids": [best[0][:n]], "labels": [best[1][:n]]}))
PY
check "trained adapter: lmforge logits" "$TOOL" grads --model model --adapter lora --batch row.json --out ours_row.st
check "trained adapter: PeftModel.from_pretrained logits" "$LMF_PY" "$REF/hf_ref.py" --model model --adapter lora --batch row.json --out ref_row.st
check "trained adapter: logits == peft (1e-4)" "$LMF_PY" "$REF/compare.py" ours_row.st ref_row.st --loss-tol 1e-4 --logits-tol 1e-4 --grad-tol 1e-3
# The merged export in transformers gives the logits of base + adapter in lmforge.
printf 'model_name_or_path: model\nadapter_name_or_path: lora\nfinetuning_type: lora\nexport_dir: merged\n' > merge.yaml
check "lmforge export merges the trained adapter" "$LMF" export merge.yaml
check "merged model: transformers logits" "$LMF_PY" "$REF/hf_ref.py" --model merged --batch row.json --out ref_merged.st
merged_logits() {
    "$LMF_PY" - <<'PY'
import sys
from safetensors.torch import load_file
o, r = load_file("ours_row.st")["logits"].double(), load_file("ref_merged.st")["logits"].double()
rel = ((o - r).abs().max() / r.abs().max()).item()
print(f"merged export logits vs lmforge base + adapter: max rel {rel:.2e}")
sys.exit(0 if rel <= 1e-4 else 1)
PY
}
check "merged export: transformers logits == lmforge base + adapter (1e-4)" merged_logits
finish
