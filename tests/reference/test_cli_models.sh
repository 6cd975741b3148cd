#!/bin/sh
# `lmforge init-model` folders load in transformers with no missing/unexpected weights, and
# `lmforge score` agrees with transformers' mean NLL (1e-4) on them; --tokenizer sizes the
# vocabulary from a real tokenizer (../shared/data, skipped when absent).
. "$(dirname "$0")/common.sh"
IDS=1,17,250,3,99,400,12,7,311,64,2,128,5,77
M="$WORK/models"

nll_matches() { # nll_matches MODEL_DIR IDS
    "$LMF" score --model "$1" --ids "$2" --json > "$WORK/ours.json" &&
        "$LMF_PY" "$REF/hf_nll.py" --model "$1" --ids "$2" > "$WORK/ref.json" &&
        "$LMF_PY" - "$WORK/ours.json" "$WORK/ref.json" <<'PY'
import json, sys
o, r = (json.load(open(p)) for p in sys.argv[1:3])
err = abs(o["mean_nll"] - r["mean_nll"]) / abs(r["mean_nll"])
lp = max(abs(a - b) for a, b in zip(o["logprobs"], r["logprobs"]))
print(f"mean NLL lmforge {o['mean_nll']:.7f} transformers {r['mean_nll']:.7f} rel err {err:.2e}, max logprob diff {lp:.2e}")
assert len(o["logprobs"]) == len(r["logprobs"])
sys.exit(0 if err <= 1e-4 and lp <= 1e-4 * max(1.0, abs(r["mean_nll"])) else 1)
PY
}

for arch in llama mistral qwen2 qwen3; do
    check "init-model $arch tiny" "$LMF" init-model --arch "$arch" --preset tiny --seed 11 --out "$M/$arch"
    check "$arch tiny loads in transformers without warnings" "$LMF_PY" "$REF/check_load.py" --model "$M/$arch"
    check "$arch tiny: score == transformers NLL" nll_matches "$M/$arch" "$IDS"
done
check "sharded save (model-0000K-of-0000N + index)" "$TOOL" save-sharded --model "$M/qwen2" --out "$M/qwen2_sharded" --max-bytes 300000
check "sharded folder has several shards and an index" sh -c "test -f '$M/qwen2_sharded/model.safetensors.index.json' && test \$(ls '$M/qwen2_sharded'/model-*-of-*.safetensors | wc -l) -gt 1"
check "sharded folder loads in transformers without warnings" "$LMF_PY" "$REF/check_load.py" --model "$M/qwen2_sharded"
check "sharded folder: score == transformers NLL" nll_matches "$M/qwen2_sharded" "$IDS"
check "init-model qwen2 tiny bf16" "$LMF" init-model --arch qwen2 --preset tiny --seed 12 --dtype bfloat16 --out "$M/qwen2_bf16"
check "qwen2 bf16 loads in transformers without warnings" "$LMF_PY" "$REF/check_load.py" --model "$M/qwen2_bf16"
check "qwen2 bf16: score == transformers NLL" nll_matches "$M/qwen2_bf16" "$IDS"

check "init-model llama smollm-135m (tied, GQA)" "$LMF" init-model --arch llama --preset smollm-135m --seed 13 --out "$M/smollm"
check "smollm-135m loads in transformers without warnings" "$LMF_PY" "$REF/check_load.py" --model "$M/smollm"
check "smollm-135m: score == transformers NLL" nll_matches "$M/smollm" "$IDS"
rm -rf "$M/smollm"
if [ -z "${LMF_QUICK:-}" ]; then
    check "init-model llama-110m" "$LMF" init-model --arch llama --preset llama-110m --seed 14 --out "$M/l110"
    check "llama-110m loads in transformers without warnings" "$LMF_PY" "$REF/check_load.py" --model "$M/l110"
    rm -rf "$M/l110"
fi

TOK="$LMF_SRC/../shared/data/tokenizers/tinyllama-1.1b-chat-v1.0"
if [ -f "$TOK/tokenizer.json" ]; then
    check "init-model --tokenizer tinyllama" "$LMF" init-model --arch llama --preset tiny --tokenizer "$TOK" --out "$M/tok"
    check "vocab sized from tokenizer, bos/eos from tokenizer_config" "$LMF_PY" -c "
import json, sys
c = json.load(open('$M/tok/config.json'))
assert c['vocab_size'] == 32000 and c['bos_token_id'] == 1 and c['eos_token_id'] == 2, c
for f in ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model'):
    assert open('$M/tok/' + f, 'rb').read() == open('$TOK/' + f, 'rb').read(), f
"
    check "tokenizer folder loads in transformers" "$LMF_PY" "$REF/check_load.py" --model "$M/tok"
else
    echo "SKIP tokenizer sizing: ../shared/data/tokenizers not present"
fi

# Bad input: clear errors naming the file, never a crash.
mkdir -p "$M/bad"
printf '{"architectures": ["GPT2LMHeadModel"], "hidden_size": 8}' > "$M/bad/config.json"
check_fails "unsupported architecture refused" "$LMF" score --model "$M/bad" --ids 1,2
grep -q "GPT2LMHeadModel is not supported" "$WORK/out.txt" || { echo "FAIL message"; cat "$WORK/out.txt"; fail=$((fail + 1)); }
cp "$M/llama/config.json" "$M/bad/config.json"
head -c 1000 "$M/llama/model.safetensors" > "$M/bad/model.safetensors"
check_fails "truncated safetensors refused" "$LMF" score --model "$M/bad" --ids 1,2
grep -q "model.safetensors" "$WORK/out.txt" || { echo "FAIL message"; cat "$WORK/out.txt"; fail=$((fail + 1)); }
check_fails "id outside vocabulary refused" "$LMF" score --model "$M/llama" --ids 1,99999
grep -q "outside the vocabulary" "$WORK/out.txt" || { echo "FAIL message"; cat "$WORK/out.txt"; fail=$((fail + 1)); }
finish
