#!/bin/sh
# `lmforge train` end to end on lmforge's demo data (data/demo): a tokenizer trained here, a tiny
# model, LoRA SFT and full pre-training for a few dozen steps. The loss falls, the outputs are
# where LLaMA-Factory puts them, the LoRA adapter loads with peft and gives lmforge's NLL, the
# full model loads with transformers and gives lmforge's NLL; bad configs are refused clearly.
. "$(dirname "$0")/common.sh"
cd "$WORK"
D="$LMF_SRC/data/demo"
demo_model qwen2 3
cat > lora.yaml <<YAML
model_name_or_path: model
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
dataset: demo_sft
dataset_dir: $D
template: chatml
cutoff_len: 64
output_dir: lora
logging_steps: 5
per_device_train_batch_size: 4
gradient_accumulation_steps: 2
learning_rate: 5.0e-3
max_steps: 40
plot_loss: true
lr_scheduler_type: cosine
warmup_ratio: 0.1
YAML
check "lmforge train (LoRA sft)" "$LMF" train lora.yaml
falls() { # falls LOG: the last logged loss is clearly below the first
    "$LMF_PY" - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["loss"], rows[-1]["loss"]
print(f"loss {first:.3f} -> {last:.3f} over {rows[-1]['current_steps']} steps")
keys = {"current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time", "remaining_time"}
assert keys <= rows[0].keys(), rows[0].keys()
sys.exit(0 if last < 0.8 * first else 1)
PY
}
check "LoRA loss falls" falls lora/trainer_log.jsonl
check "outputs: adapter, config, tokenizer, results, loss plot" sh -c "test -f lora/adapter_model.safetensors && test -f lora/adapter_config.json && test -f lora/tokenizer.json && test -f lora/train_results.json && head -c 8 lora/training_loss.png | od -An -c | grep -q 'P   N   G'"
IDS=$(printf 'What color is the fox?' | "$LMF" tokenizer encode --tokenizer model | tr -d '[] ')
peft_nll() { # peft_nll MODEL ADAPTER IDS: lmforge score --adapter == peft on transformers
    "$LMF" score --model "$1" --adapter "$2" --ids "$3" --json > ours.json && "$LMF_PY" - "$1" "$2" "$3" <<'PY'
import json, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32), sys.argv[2]).eval()
ids = torch.tensor([[int(x) for x in sys.argv[3].split(",")]])
with torch.no_grad():
    logits = model(input_ids=ids).logits[0, :-1]
ref = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
ours = json.load(open("ours.json"))["mean_nll"]
print(f"mean NLL with adapter: lmforge {ours:.7f} peft {ref:.7f}")
sys.exit(0 if abs(ours - ref) <= 1e-4 * abs(ref) else 1)
PY
}
check "trained adapter: lmforge NLL == peft NLL" peft_nll model lora "$IDS"

printf 'model_name_or_path: model\nadapter_name_or_path: lora\nfinetuning_type: lora\nexport_dir: merged\n' > merge.yaml
check "lmforge export merges the adapter" "$LMF" export merge.yaml
check "merged model loads in transformers" "$LMF_PY" "$REF/check_load.py" --model merged
merged_nll() { # transformers on the merged folder == lmforge on base + adapter
    "$LMF" score --model model --adapter lora --ids "$IDS" --json > o.json &&
        "$LMF_PY" "$REF/hf_nll.py" --model merged --ids "$IDS" > r.json &&
        "$LMF_PY" -c "import json; o=json.load(open('o.json'))['mean_nll']; r=json.load(open('r.json'))['mean_nll']; print(o, r); exit(0 if abs(o-r) <= 1e-4*abs(r) else 1)"
}
check "merged model in transformers == base + adapter in lmforge (NLL)" merged_nll
check_fails "export_legacy_format refused" "$LMF" export merge.yaml export_legacy_format=true

sed -e 's/finetuning_type: lora/finetuning_type: full/' -e 's/output_dir: lora/output_dir: full/' lora.yaml > full.yaml
check "lmforge train (full sft)" "$LMF" train full.yaml max_steps=20 learning_rate=1e-3
check "full fine-tuned model loads in transformers" "$LMF_PY" "$REF/check_load.py" --model full
check "full model: score == transformers NLL" sh -c "'$LMF' score --model full --ids '$IDS' --json > o.json && '$LMF_PY' '$REF/hf_nll.py' --model full --ids '$IDS' > r.json && '$LMF_PY' -c \"import json; o=json.load(open('o.json'))['mean_nll']; r=json.load(open('r.json'))['mean_nll']; print(o, r); exit(0 if abs(o-r) <= 1e-4*abs(r) else 1)\""

# Refusals, each naming what is wrong; nothing written into a non-empty output_dir.
check_fails "non-empty output_dir without overwrite_output_dir" "$LMF" train lora.yaml
grep -q "overwrite_output_dir" "$WORK/out.txt" || { echo "FAIL message"; fail=$((fail + 1)); }
check_fails "typo in a key" "$LMF" train lora.yaml output_dir=x2 lora_rnk=4
grep -q '"lora_rank"' "$WORK/out.txt" || { echo "FAIL message"; fail=$((fail + 1)); }
check_fails "unknown template" "$LMF" train lora.yaml output_dir=x3 template=nope
grep -q "nope" "$WORK/out.txt" || { echo "FAIL message"; fail=$((fail + 1)); }
check_fails "fp16 on CPU" "$LMF" train lora.yaml output_dir=x4 fp16=true
grep -q "bf16" "$WORK/out.txt" || { echo "FAIL message"; fail=$((fail + 1)); }
# Checkpoints and exact resume: an uninterrupted run against one killed with SIGKILL after a
# checkpoint and resumed (LoRA with dropout, so the RNG state matters too).
sed -e 's/output_dir: lora/output_dir: run_a/' -e 's/max_steps: 40/max_steps: 24/' lora.yaml > resume.yaml
printf 'lora_dropout: 0.1\nsave_steps: 4\nsave_total_limit: 2\n' >> resume.yaml
check "uninterrupted run" "$LMF" train resume.yaml
killed_run() { # start run_b, SIGKILL it soon after its first checkpoint, before it ends
    for delay in 0 0.01 0.03 0.002 0.05; do
        rm -rf run_b
        "$LMF" train resume.yaml output_dir=run_b > /dev/null 2>&1 &
        pid=$!
        while kill -0 "$pid" 2> /dev/null && ! ls -d run_b/checkpoint-* > /dev/null 2>&1; do sleep 0.01; done
        sleep "$delay"
        kill -9 "$pid" 2> /dev/null
        wait "$pid" 2> /dev/null
        if ls -d run_b/checkpoint-* > /dev/null 2>&1 && [ ! -f run_b/adapter_model.safetensors ]; then
            echo "killed after $(ls -d run_b/checkpoint-* | tr '\n' ' ')"
            return 0
        fi
    done
    return 1
}
check "kill -9 after a checkpoint" killed_run
check "resume: continues from the newest checkpoint" sh -c "'$LMF' train resume.yaml output_dir=run_b 2>&1 | grep 'resumed from'"
check "resumed final weights bit-identical to the uninterrupted run" cmp run_a/adapter_model.safetensors run_b/adapter_model.safetensors
check "save_total_limit keeps 2 checkpoints" sh -c "test \$(ls -d run_a/checkpoint-* | wc -l) -eq 2 && test -d run_a/checkpoint-20 && test -d run_a/checkpoint-16"
check_fails "a checkpoint of another LoRA setting is refused" "$LMF" train resume.yaml output_dir=run_b resume_from_checkpoint=run_a/checkpoint-16 lora_rank=4
grep -q "another model" "$WORK/out.txt" || { echo "FAIL message"; fail=$((fail + 1)); }
finish
