#!/bin/sh
# `lmforge train` beyond the loop itself: the eval loop (val_size / eval_dataset, eval_strategy,
# do_eval, eval-only runs) checked against transformers + peft on the batches lmforge evaluated;
# the tokenized_path cache (reused, refused when stale, rebuilt on overwrite_cache, corruption
# detected); trainer_state.json; the progress bar on a terminal and plain lines otherwise; and a
# disk that fills up while a checkpoint is written.
. "$(dirname "$0")/common.sh"
cd "$WORK"
D="$LMF_SRC/data/demo"
demo_model llama 5
cat > lora.yaml <<YAML
model_name_or_path: model
stage: sft
do_train: true
do_eval: true
finetuning_type: lora
lora_rank: 8
dataset: demo_sft
dataset_dir: $D
template: chatml
cutoff_len: 64
val_size: 0.2
eval_strategy: steps
eval_steps: 6
per_device_eval_batch_size: 3
output_dir: lora
logging_steps: 3
per_device_train_batch_size: 4
gradient_accumulation_steps: 1
learning_rate: 5.0e-3
max_steps: 12
plot_loss: true
YAML
check "LoRA sft with val_size, eval every 6 steps and at the end" env LMF_EVAL_DUMP_BATCHES="$WORK/eval.jsonl" "$LMF" train lora.yaml
check "final eval_loss == transformers + peft on the same batches" "$LMF_PY" "$REF/eval_ref.py" --model model --adapter lora --batches eval.jsonl --step 12 --results lora/eval_results.json
outputs() {
    "$LMF_PY" - <<'PY'
import json, math
log = [json.loads(l) for l in open("lora/trainer_log.jsonl")]
evals = [r for r in log if "eval_loss" in r]
assert [r["current_steps"] for r in evals] == [6, 12], evals
assert all(k in log[0] for k in ("current_steps", "total_steps", "loss", "lr", "epoch", "percentage",
                                  "elapsed_time", "remaining_time", "throughput", "total_tokens")), log[0]
st = json.load(open("lora/trainer_state.json"))
assert st["global_step"] == 12 and st["max_steps"] == 12 and st["logging_steps"] == 3, st
h = st["log_history"]
assert [e["step"] for e in h if "loss" in e] == [3, 6, 9, 12], h
assert [e["step"] for e in h if "eval_loss" in e] == [6, 12], h
assert "train_loss" in h[-1] and h[-1]["step"] == 12, h[-1]
mean = sum(e["loss"] for e in h if "loss" in e) / 4
tr = json.load(open("lora/train_results.json"))
assert abs(tr["train_loss"] - mean) < 1e-6 * mean, (tr["train_loss"], mean)
al = json.load(open("lora/all_results.json"))
ev = json.load(open("lora/eval_results.json"))
assert al["eval_loss"] == ev["eval_loss"] and al["train_loss"] == tr["train_loss"], al
assert abs(ev["perplexity"] - math.exp(ev["eval_loss"])) < 1e-9 * ev["perplexity"], ev
print("trainer_log.jsonl, trainer_state.json and the results files agree")
PY
}
check "trainer_log.jsonl, trainer_state.json, train/eval/all_results.json" outputs
check "loss plots (training and eval)" sh -c "head -c 8 lora/training_loss.png | od -An -c | grep -q 'P   N   G' && head -c 8 lora/training_eval_loss.png | od -An -c | grep -q 'P   N   G'"

# Eval only (do_train false) on eval_dataset, against transformers on the batches it used.
cat > evalonly.yaml <<YAML
model_name_or_path: model
adapter_name_or_path: lora
finetuning_type: lora
stage: sft
do_train: false
do_eval: true
eval_dataset: demo_sft
dataset_dir: $D
template: chatml
cutoff_len: 64
max_samples: 20
per_device_eval_batch_size: 4
output_dir: evalonly
YAML
check "eval only on eval_dataset" env LMF_EVAL_DUMP_BATCHES="$WORK/eval2.jsonl" "$LMF" train evalonly.yaml
check "eval-only eval_loss == transformers + peft" "$LMF_PY" "$REF/eval_ref.py" --model model --adapter lora --batches eval2.jsonl --results evalonly/eval_results.json
check_fails "do_eval without an eval set is refused" "$LMF" train lora.yaml output_dir=x1 val_size=0 eval_strategy=no
grep -q "val_size or eval_dataset" out.txt || { echo "FAIL message"; fail=$((fail + 1)); }

# additional_target: whole modules trained beside LoRA, saved as PEFT's modules_to_save; peft
# loads the adapter and gives lmforge's NLL; the merged export carries the trained modules.
check "LoRA + additional_target embed_tokens,norm" "$LMF" train lora.yaml output_dir=mts additional_target=embed_tokens,norm do_eval=false val_size=0 eval_strategy=no max_steps=6 save_steps=3
modules_saved() {
    "$LMF_PY" - <<'PY'
import json
from safetensors.torch import load_file
cfg = json.load(open("mts/adapter_config.json"))
assert cfg["modules_to_save"] == ["embed_tokens", "norm"], cfg["modules_to_save"]
a, base = load_file("mts/adapter_model.safetensors"), load_file("model/model.safetensors")
for k in ("model.embed_tokens.weight", "model.norm.weight"):
    d = (a["base_model.model." + k] - base[k]).abs().max().item()
    print(k, "changed by", d)
    assert d > 1e-4, k
assert (load_file("mts/checkpoint-3/adapter_model.safetensors").keys() == a.keys())
PY
}
check "adapter holds the trained modules (PEFT names)" modules_saved
IDS=$(printf 'What color is the fox?' | "$LMF" tokenizer encode --tokenizer model | tr -d '[] ')
peft_modules_nll() {
    "$LMF" score --model model --adapter mts --ids "$IDS" --json > ours.json && "$LMF_PY" - "$IDS" <<'PY'
import json, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("model", torch_dtype=torch.float32), "mts").eval()
ids = torch.tensor([[int(x) for x in sys.argv[1].split(",")]])
with torch.no_grad():
    ref = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:]).item()
ours = json.load(open("ours.json"))["mean_nll"]
print(f"mean NLL with adapter + modules_to_save: lmforge {ours:.7f} peft {ref:.7f}")
sys.exit(0 if abs(ours - ref) <= 1e-4 * abs(ref) else 1)
PY
}
check "peft (modules_to_save) NLL == lmforge" peft_modules_nll
printf 'model_name_or_path: model\nadapter_name_or_path: mts\nfinetuning_type: lora\nexport_dir: mts_merged\n' > mmerge.yaml
check "merged export carries the modules: transformers NLL == lmforge" sh -c "'$LMF' export mmerge.yaml > /dev/null && '$LMF_PY' '$REF/hf_nll.py' --model mts_merged --ids '$IDS' > r.json && '$LMF_PY' -c \"import json; o=json.load(open('ours.json'))['mean_nll']; r=json.load(open('r.json'))['mean_nll']; print(o, r); exit(0 if abs(o-r) <= 1e-4*abs(r) else 1)\""
check_fails "additional_target naming no module" "$LMF" train lora.yaml output_dir=x9 additional_target=embed_tokns
grep -q '"embed_tokns" names no module' out.txt || { echo "FAIL message"; fail=$((fail + 1)); }

# bf16 and gradient_checkpointing from the YAML: checkpointing changes nothing (bit-identical
# adapters), bf16 stays within 1e-2 of the f32 losses.
for v in "f32 bf16=false" "bf16 bf16=true" "bf16ck bf16=true gradient_checkpointing=true" "f32ck gradient_checkpointing=true"; do
    set -- $v
    name=$1
    shift
    check "LoRA 6 steps: $name" "$LMF" train lora.yaml output_dir=cmp_$name do_eval=false val_size=0 eval_strategy=no max_steps=6 logging_steps=1 "$@"
done
check "gradient_checkpointing: bit-identical adapters (f32 and bf16)" sh -c "cmp cmp_f32/adapter_model.safetensors cmp_f32ck/adapter_model.safetensors && cmp cmp_bf16/adapter_model.safetensors cmp_bf16ck/adapter_model.safetensors"
bf16_close() {
    "$LMF_PY" - <<'PY'
import json
a = [json.loads(l)["loss"] for l in open("cmp_f32/trainer_log.jsonl")]
b = [json.loads(l)["loss"] for l in open("cmp_bf16/trainer_log.jsonl")]
d = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"bf16 vs f32 per-step loss: max rel {d:.2e}")
assert len(a) == len(b) == 6 and d < 1e-2
PY
}
check "bf16 losses within 1e-2 of f32" bf16_close

# tokenized_path: tokenise once, reuse, refuse a stale cache, rebuild on request.
cat > cached.yaml <<YAML
model_name_or_path: model
stage: sft
do_train: true
finetuning_type: lora
dataset: demo_sft
dataset_dir: $D
template: chatml
cutoff_len: 64
output_dir: c1
per_device_train_batch_size: 4
max_steps: 4
logging_steps: 2
tokenized_path: tokcache
YAML
check "first run writes the token cache" sh -c "'$LMF' train cached.yaml > o1.txt 2>&1 && grep -q 'tokenized dataset saved' o1.txt && test -f tokcache/lmforge_tokens.bin"
check "second run reads it" sh -c "'$LMF' train cached.yaml output_dir=c2 > o2.txt 2>&1 && grep -q 'from tokenized_path' o2.txt"
check "same final weights from the cache" cmp c1/adapter_model.safetensors c2/adapter_model.safetensors
check_fails "a cache made with another cutoff_len is refused" "$LMF" train cached.yaml output_dir=c3 cutoff_len=32
grep -q "cutoff_len was 64" out.txt || { echo "FAIL message"; cat out.txt; fail=$((fail + 1)); }
check "overwrite_cache: true tokenises again" sh -c "'$LMF' train cached.yaml output_dir=c4 cutoff_len=32 overwrite_cache=true > o4.txt 2>&1 && grep -q 'tokenized dataset saved' o4.txt"
check "corrupt cache detected" sh -c "head -c 300 tokcache/lmforge_tokens.bin > t && mv t tokcache/lmforge_tokens.bin && ! '$LMF' train cached.yaml output_dir=c5 cutoff_len=32 > o5.txt 2>&1 && grep -q 'truncated or corrupt' o5.txt"

# Terminal: a live bar on a TTY (script gives the run a pseudo-terminal), plain lines otherwise.
check "progress bar on a terminal" sh -c "script -qec \"'$LMF' train cached.yaml output_dir=t1 overwrite_cache=true\" /dev/null > tty.txt 2>&1 && grep -q '\[#' tty.txt && tr '\r' '\n' < tty.txt | grep -q '4/4 \[########################\] 100%'"
check "no bar when not a terminal" sh -c "'$LMF' train cached.yaml output_dir=t2 > plain.txt 2>&1 && ! grep -q \"\$(printf '\r')\" plain.txt && grep -c '^step ' plain.txt | grep -q '^2$'"

# Out of disk while saving a checkpoint: a small tmpfs in a private mount namespace holds the
# first checkpoint but not the second; the error names the cause, the first checkpoint is
# whole (identical to an unconstrained run's) and no temporary folder is left behind.
cat > full.yaml <<YAML
model_name_or_path: model
stage: sft
do_train: true
finetuning_type: full
dataset: demo_sft
dataset_dir: $D
template: chatml
cutoff_len: 64
per_device_train_batch_size: 2
max_steps: 6
save_steps: 2
logging_steps: 2
output_dir: roomy
YAML
check "full run with room: checkpoints 2 and 4" sh -c "'$LMF' train full.yaml && test -d roomy/checkpoint-4"
if unshare -m sh -c "mkdir -p mt && mount -t tmpfs -o size=64k tmpfs mt" 2> /dev/null; then
    ck=$(du -sk roomy/checkpoint-2 | cut -f1)
    size=$((ck * 3 / 2 + 64))
    disk_full() {
        unshare -m sh -c "mount -t tmpfs -o size=${size}k tmpfs mt || exit 2
            '$LMF' train full.yaml output_dir=mt/out > mt.txt 2>&1 && exit 3
            cat mt.txt
            grep -q 'No space left on device' mt.txt || exit 4
            grep -q 'previous checkpoint is kept' mt.txt || exit 5
            cmp mt/out/checkpoint-2/model.safetensors roomy/checkpoint-2/model.safetensors || exit 6
            cmp mt/out/checkpoint-2/optimizer.bin roomy/checkpoint-2/optimizer.bin || exit 7
            test \$(ls -A mt/out | grep -c tmp) -eq 0 || { ls -la mt/out; exit 8; }"
    }
    check "disk full during checkpoint-4: reported, checkpoint-2 intact (tmpfs of ${size} KiB)" disk_full
else
    echo "SKIP disk-full check: cannot mount a tmpfs in a private mount namespace here"
fi
finish
