#!/bin/sh
# LoRA SFT training step (forward + backward + AdamW) on llama-110m, batch 4 x 256: lmforge in
# f32 and bf16 (with and without activation checkpointing) against the transformers + peft +
# torch.optim.AdamW reference trainer (LoRA r=8 on all linears), same threads, one script, so
# the ratios compare runs under the same machine load. The reference runs f32 (the issue's
# baseline); its torch.autocast bf16 run is a second reference line. Besides wall-clock
# tokens/s the table gives CPU seconds per step and the ratio on that basis: on a shared,
# oversubscribed machine the wall-clock ratio swings with the neighbours' load, the CPU-time
# ratio much less (set OMP_WAIT_POLICY=passive so that waiting threads sleep, not spin), and
# the best step of each run is the one least disturbed.
# Usage: bench/lora_sft.sh BUILD_DIR   (BENCH_THREADS, BENCH_STEPS, LMF_PY as in run.sh)
set -eu
BUILD=${1:-build}
PY=${LMF_PY:-.venv/bin/python}
THREADS=${BENCH_THREADS:-2}
STEPS=${BENCH_STEPS:-5}
export OMP_NUM_THREADS=$THREADS
COMMON="--preset llama-110m --batch 4 --seq 256 --threads $THREADS --steps $STEPS --mode lora"

echo "== LoRA SFT step (fwd+bwd+AdamW), llama-110m, batch 4 x 256, $THREADS threads =="
ref_f32=$("$PY" bench/torch_train_step.py $COMMON)
echo "$ref_f32"
ours_f32=$("$BUILD/bench/bench_train_step" $COMMON)
echo "$ours_f32"
ours_bf16=$("$BUILD/bench/bench_train_step" $COMMON --bf16 1)
echo "$ours_bf16"
ref_bf16=$("$PY" bench/torch_train_step.py $COMMON --autocast bf16 2>/dev/null || echo '{}')
echo "$ref_bf16"
ours_f32_ckpt=$("$BUILD/bench/bench_train_step" $COMMON --ckpt 1)
echo "$ours_f32_ckpt"
ours_bf16_ckpt=$("$BUILD/bench/bench_train_step" $COMMON --bf16 1 --ckpt 1)
echo "$ours_bf16_ckpt"

"$PY" - "$ref_f32" "$ref_bf16" "$ours_f32" "$ours_bf16" "$ours_f32_ckpt" "$ours_bf16_ckpt" <<'PYEOF'
import json, sys
ref, ref_bf, f32, bf, f32c, bfc = (json.loads(a) for a in sys.argv[1:])
base = ref["tokens_per_s"]
rows = [("pytorch+peft", "f32", 0, ref), ("pytorch+peft", "autocast bf16", 0, ref_bf),
        ("lmforge", "f32", 0, f32), ("lmforge", "bf16" if bf.get("bf16") else "bf16->f32 fallback", 0, bf),
        ("lmforge", "f32", 1, f32c), ("lmforge", "bf16" if bfc.get("bf16") else "bf16->f32 fallback", 1, bfc)]
print(f"{'impl':14} {'precision':20} {'ckpt':>4} {'ms/step':>9} {'tokens/s':>9} {'vs ref f32':>10} "
      f"{'best ms':>8} {'vs ref':>7} {'CPU s/step':>10} {'vs ref':>7} {'peak RSS MB':>11} "
      f"{'activ. MB':>9}")
for impl, prec, ck, d in rows:
    if "tokens_per_s" not in d:
        print(f"{impl:14} {prec:20} {'-':>4} (did not run)")
        continue
    act = f"{d['act_mb']:>9.0f}" if "act_mb" in d else f"{'-':>9}"
    print(f"{impl:14} {prec:20} {ck:>4} {d['ms_per_step']:>9.1f} {d['tokens_per_s']:>9.1f} "
          f"{d['tokens_per_s'] / base:>9.2f}x {d['best_ms']:>8.0f} {ref['best_ms'] / d['best_ms']:>6.2f}x "
          f"{d['cpu_s_per_step']:>10.2f} {ref['cpu_s_per_step'] / d['cpu_s_per_step']:>6.2f}x "
          f"{d['peak_rss_mb']:>11.0f} {act}")
r32, rbf = f32["tokens_per_s"] / base, bf["tokens_per_s"] / base
print(f"lmforge f32 / reference: {r32:.2f}x (target >= 1.2x: {'met' if r32 >= 1.2 else 'NOT met'}); "
      f"lmforge bf16 / reference: {rbf:.2f}x (target >= 2x: {'met' if rbf >= 2 else 'NOT met'}); "
      f"bf16 / f32 within lmforge: {bf['tokens_per_s'] / f32['tokens_per_s']:.2f}x")
b32, bbf = (ref["best_ms"] / d["best_ms"] for d in (f32, bf))
print(f"on the best step of each run: lmforge f32 / reference {b32:.2f}x, bf16 / reference {bbf:.2f}x")
c32, cbf = (ref["cpu_s_per_step"] / d["cpu_s_per_step"] for d in (f32, bf))
print(f"on CPU time: lmforge f32 / reference {c32:.2f}x, bf16 / reference {cbf:.2f}x, "
      f"bf16 / f32 {f32['cpu_s_per_step'] / bf['cpu_s_per_step']:.2f}x")
print(f"checkpointing: activations {f32['act_mb']:.0f} -> {f32c['act_mb']:.0f} MB, peak RSS "
      f"{f32['peak_rss_mb']:.0f} -> {f32c['peak_rss_mb']:.0f} MB (f32), "
      f"{bf['peak_rss_mb']:.0f} -> {bfc['peak_rss_mb']:.0f} MB (bf16); "
      f"step time x{f32['ms_per_step'] and f32c['ms_per_step'] / f32['ms_per_step']:.2f} (f32)")
PYEOF
