#!/bin/sh
# make bench: lmforge against PyTorch (transformers) on the same shapes and threads, side by
# side in one script, plus the GEMM library comparison and the LoRA SFT table (lora_sft.sh).
# Usage: bench/run.sh BUILD_DIR
set -eu
BUILD=${1:-build}
PY=${LMF_PY:-.venv/bin/python}
THREADS=${BENCH_THREADS:-2}
STEPS=${BENCH_STEPS:-5}
export OMP_NUM_THREADS=$THREADS

echo "== tokenizer encode/decode, one core (target >= 5 MB/s) =="
OMP_NUM_THREADS=1 "$BUILD/bench/bench_tokenizer" || echo "(tokenizer bench skipped: ../shared/data/tokenizers absent)"
echo
echo "== single-stream decode / prefill, llama-110m, $THREADS threads, vs the bandwidth roofline (target >= 90 %; q8_0 >= 3x f32) =="
"$BUILD/bench/bench_decode" --preset llama-110m --threads "$THREADS" --reps "$STEPS" --dtype all
echo
echo "== lmforge api under 1/8/16/32 streaming clients (target: 32 >= 4x 1, and > 16) =="
SERVE_DIR=$(mktemp -d /tmp/lmf-bench-XXXXXX)
"$BUILD/lmforge" tokenizer train --corpus data/demo/corpus.txt --vocab-size 400 --out "$SERVE_DIR/tok" > /dev/null
"$BUILD/lmforge" init-model --arch llama --preset llama-110m --tokenizer "$SERVE_DIR/tok" --out "$SERVE_DIR/m" > /dev/null
for dt in float32 bfloat16; do
    "$PY" bench/bench_serve.py --lmforge "$BUILD/lmforge" --model "$SERVE_DIR/m" --threads "$THREADS" \
        --seconds 15 --repeat 2 --infer-dtype $dt | grep -v '^\['
done
echo
echo "== 1 vs 2 replicas (lmforge router / data_parallel_size) at 16 streaming clients =="
"$PY" bench/bench_router.py --lmforge "$BUILD/lmforge" --model "$SERVE_DIR/m" --threads "$THREADS" \
    --clients 16 --seconds 20 --repeat 2 | grep -v '^\['
rm -rf "$SERVE_DIR"
echo
echo "== GEMM libraries on our shapes =="
"$BUILD/bench/bench_gemm" "$THREADS" 1024

for mode in full; do
    echo
    echo "== training step (fwd+bwd+AdamW), llama-110m, batch 4 x 256, $THREADS threads, f32, $mode =="
    ours=$("$BUILD/bench/bench_train_step" --preset llama-110m --batch 4 --seq 256 --threads "$THREADS" --steps "$STEPS" --mode $mode)
    ref=$("$PY" bench/torch_train_step.py --preset llama-110m --batch 4 --seq 256 --threads "$THREADS" --steps "$STEPS" --mode $mode)
    echo "$ours"
    echo "$ref"
    "$PY" - "$ours" "$ref" <<'PYEOF'
import json, sys
o, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'':10} {'ms/step':>10} {'tokens/s':>10} {'peak RSS MB':>12}")
for name, d in (("lmforge", o), ("pytorch", r)):
    print(f"{name:10} {d['ms_per_step']:>10.1f} {d['tokens_per_s']:>10.1f} {d['peak_rss_mb']:>12.0f}")
print(f"ratio lmforge/pytorch tokens/s: {o['tokens_per_s'] / r['tokens_per_s']:.2f}x "
      f"(target >= 1.0x); memory ratio {o['peak_rss_mb'] / r['peak_rss_mb']:.2f}x")
PYEOF
done

echo
sh bench/lora_sft.sh "$BUILD"

echo
sh bench/bench_ddp.sh "$BUILD"

echo
sh bench/bench_qlora.sh "$BUILD"

echo "== tensor-parallel decode, llama-110m: TP 1 vs TP 2 (one thread per rank), all-reduce time per token =="
sh bench/bench_tp.sh "$BUILD"
