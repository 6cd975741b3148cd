#!/bin/sh
# Tensor-parallel serving on one node: `lmforge api` with tensor_parallel_size 2 (the command
# starts its 2 ranks under mpirun itself) gives the same greedy answers as tensor_parallel_size
# 1, token for token, with log-probabilities (top 5) within 1e-4 (tp_client.py: requests alone,
# then 10 at once so that prefill chunks run beside decodes), for a GQA Llama, a Qwen2 (q/k/v
# biases) and a tied-embedding model, and `lmforge chat` likewise; each rank's KV cache is half the one-rank cache; SIGTERM
# to the launcher drains and ends every rank with status 0; and what tensor parallelism cannot
# do is refused with a message naming the setting (a size that does not divide the KV heads,
# an adapter, data_parallel_size beside it). With q8_0 / nf4 weights and an int8 KV cache on
# every rank, tensor_parallel_size 2 still equals 1 with the same settings.
. "$(dirname "$0")/common.sh"
command -v mpirun > /dev/null || { echo "SKIP: mpirun not found"; exit 77; }
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$WORK"
demo_model llama 11
check "init a tiny qwen2 model" "$LMF" init-model --arch qwen2 --preset tiny --seed 5 --tokenizer tok --out model_qwen2
# the llama model with lm_head dropped and tie_word_embeddings: true
check "tie a copy's lm_head to its embedding" "$LMF_PY" - <<'PY'
import json, os, shutil
from safetensors.torch import load_file, save_file
shutil.copytree("model", "model_tied")
t = load_file("model_tied/model.safetensors")
del t["lm_head.weight"]
save_file(t, "model_tied/model.safetensors", metadata={"format": "pt"})
c = json.load(open("model_tied/config.json"))
c["tie_word_embeddings"] = True
json.dump(c, open("model_tied/config.json", "w"))
PY
cat > api.yaml <<YAML
model_name_or_path: model
template: chatml
temperature: 0
max_num_seqs: 8
max_num_batched_tokens: 16
threads: 1
YAML
# serve NAME TP MODEL [KEY=VALUE...]: a server in the background; its port in NAME.port, pid in NAME.pid
serve() {
    _n=$1 _tp=$2 _m=$3
    shift 3
    p=$(free_port)
    echo "$p" > "$_n.port"
    API_PORT=$p "$LMF" api api.yaml model_name_or_path="$_m" tensor_parallel_size="$_tp" "$@" > "$_n.log" 2>&1 &
    echo $! > "$_n.pid"
}
# stop NAME: SIGTERM, then its exit status must be 0 within 30 s
stop() {
    pid=$(cat "$1.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        echo "still running 30 s after SIGTERM"
        return 1
    fi
    wait "$pid"
}
client() { "$LMF_PY" "$REF/tp_client.py" --port "$(cat "$1.port")" "$2" "$3"; }
log_fail() { echo "---- $1.log"; tail -n 30 "$1.log"; }

for m in model model_qwen2 model_tied; do
    serve one 1 "$m"
    serve two 2 "$m"
    if ! client one --save one.json > out1.txt 2>&1; then
        echo "FAIL $m: tensor_parallel_size 1 answers"
        cat out1.txt
        log_fail one
        fail=$((fail + 1))
    fi
    cp one.json "one_$m.json"
    if client two --against one.json; then
        echo "PASS $m: tensor_parallel_size 2 == 1 (greedy tokens, log-probabilities within 1e-4)"
    else
        echo "FAIL $m: tensor_parallel_size 2 != 1"
        log_fail two
        fail=$((fail + 1))
    fi
    check "$m: tensor_parallel_size 1 exits 0 on SIGTERM" stop one
    check "$m: tensor_parallel_size 2 (launcher, mpirun, 2 ranks) exits 0 on SIGTERM" stop two
    [ "$m" = model ] || continue
    grep -E "tensor parallel|KV cache" two.log | sed 's/^/    /'
    b1=$(sed -n 's/^KV cache: .*(\([0-9]*\) bytes per block.*$/\1/p' one.log)
    b2=$(sed -n 's/^tensor parallel: KV cache per rank .*(\([0-9]*\) bytes per block.*$/\1/p' two.log)
    check "each rank's KV cache block is half the one-rank block ($b2 * 2 == $b1)" test "$((${b2:-1} * 2))" -eq "${b1:-0}"
    check "rank 0 holds half the heads, KV heads, MLP rows and vocabulary" grep -q "rank 0 holds 2 of 4 attention heads, 1 of 2 KV heads, 176 of 352 MLP rows, 200 of 400 vocabulary rows" two.log
    check "the launcher turned SIGTERM into a drain" grep -q "SIGUSR1: finishing in-flight requests" two.log
done
check "the three models answer differently" sh -c "! cmp -s one_model.json one_model_qwen2.json && ! cmp -s one_model.json one_model_tied.json"
check "no rank is left behind" sh -c "! pgrep -f 'api.yaml model_name_or_path=mode[l]' > /dev/null"

# Quantized weights and an int8 KV cache on the shards: with an intermediate size of 384 each
# rank's o / down columns start on a block boundary, so the shards quantize to the same blocks as
# the whole model and tensor_parallel_size 2 == 1 holds with the same settings.
check "init a tiny llama with an intermediate size of 384" "$LMF" init-model --arch llama --preset tiny --seed 11 --tokenizer tok --out model384 --ffn 384
for q in q8_0 nf4; do
    serve one 1 model384 infer_dtype=$q kv_cache_dtype=int8
    serve two 2 model384 infer_dtype=$q kv_cache_dtype=int8
    if client one --save one_q.json > out1.txt 2>&1 && client two --against one_q.json; then
        echo "PASS $q weights, int8 KV cache: tensor_parallel_size 2 == 1"
    else
        echo "FAIL $q weights, int8 KV cache: tensor_parallel_size 2 != 1"
        cat out1.txt
        log_fail one
        log_fail two
        fail=$((fail + 1))
    fi
    # (rank 0 logs its shard's weights; a float32 worker would move the logits by ~1e-3, far
    # past the 1e-4 of the equality above)
    check "$q: rank 0 says its shard holds $q weights" grep -q "weights: $q" two.log
    check "$q: tensor_parallel_size 1 exits 0 on SIGTERM" stop one
    check "$q: tensor_parallel_size 2 exits 0 on SIGTERM" stop two
done

# `lmforge chat` starts its ranks the same way
"$LMF" chat api.yaml --prompt "hello there" --prompt "what does each rank hold" > chat1.txt 2>&1 || true
"$LMF" chat api.yaml --prompt "hello there" --prompt "what does each rank hold" tensor_parallel_size=2 > chat2.txt 2>&1 || true
grep "^assistant:" chat2.txt | sed 's/^/    /'
check "chat: tensor_parallel_size 2 == 1" sh -c "grep '^assistant:' chat1.txt > a1 && grep '^assistant:' chat2.txt > a2 && test \$(wc -l < a1) -eq 2 && cmp a1 a2"

# refused CHECK_NAME MESSAGE ARGS...: `lmforge api api.yaml ARGS` fails, saying MESSAGE
refused() {
    name=$1 msg=$2
    shift 2
    rc=0
    "$LMF" api api.yaml "$@" > refused.txt 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] && grep -qF "$msg" refused.txt; then
        echo "PASS $name"
    else
        echo "FAIL $name (exit $rc)"
        cat refused.txt
        fail=$((fail + 1))
    fi
}
refused "tensor_parallel_size 3 is refused, naming the head counts" \
    "tensor_parallel_size 3 must divide num_key_value_heads (2; num_attention_heads 4)" tensor_parallel_size=3
refused "an adapter is refused" "tensor_parallel_size 2 with adapter_name_or_path: LoRA adapters are not split" \
    tensor_parallel_size=2 adapter_name_or_path=model
refused "data_parallel_size beside it is refused" "tensor_parallel_size 2 with data_parallel_size 2" \
    tensor_parallel_size=2 data_parallel_size=2
finish
