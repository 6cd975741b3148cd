#!/bin/sh
# LoRA training step on a quantized base (QLoRA) against float32 and bf16 bases: the memory the
# base holds and the step's tokens/s, llama-110m, side by side in one script (each line one
# bench_train_step process, run back to back: compare within one run of this script).
# Usage: bench/bench_qlora.sh BUILD_DIR [BATCH] [SEQ] [STEPS]
set -eu
BUILD=${1:-build}
B=${2:-4}
T=${3:-256}
STEPS=${4:-3}
THREADS=${BENCH_THREADS:-2}
PY=${LMF_PY:-.venv/bin/python}
echo "== LoRA step (r 8, all linears) on llama-110m, batch $B x $T, $THREADS threads, load $(cut -d' ' -f1-3 /proc/loadavg) =="
out=$(mktemp)
for fmt in f32 bf16 q8_0 nf4 fp4 q4_1; do
    case $fmt in
    f32) extra="" ;;
    bf16) extra="--bf16 1" ;;
    *) extra="--quantize $fmt" ;;
    esac
    "$BUILD/bench/bench_train_step" --mode lora --batch "$B" --seq "$T" --steps "$STEPS" \
        --threads "$THREADS" $extra | sed "s/^{/{\"fmt\": \"$fmt\", /" >> "$out"
done
"$PY" - "$out" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
f32 = rows[0]
print(f"{'base':6} {'base MB':>9} {'x f32':>7} {'tokens/s':>9} {'x f32':>7} {'ms/step':>9} {'peak RSS MB':>12}")
for r in rows:
    # bf16 mixed precision keeps the float32 master weights beside a bf16 copy
    print(f"{r['fmt']:6} {r['base_mb']:9.1f} {r['base_mb'] / f32['base_mb']:7.2f} {r['tokens_per_s']:9.1f} "
          f"{r['tokens_per_s'] / f32['tokens_per_s']:7.2f} {r['ms_per_step']:9.1f} {r['peak_rss_mb']:12.0f}")
PYEOF
rm -f "$out"
