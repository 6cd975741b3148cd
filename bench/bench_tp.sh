#!/bin/sh
# Tensor-parallel decode on llama-110m (random init, as `lmforge init-model --preset
# llama-110m`): single-stream decode tokens/s of TP 1 (the whole model, one thread) against TP 2
# (two ranks under mpirun, one thread each), with the milliseconds per token rank 0 spends in
# the all-reduces (1 + 2 x 12 of them) and in the gather of the logits; TP 1 on two threads for
# the same cores used the other way. The rounds alternate the configurations and each figure is
# the best round's, printed with the 1-minute load average when that round started (the
# machine is shared: a rank descheduled by another job stalls both ranks at the next
# all-reduce, so figures move with the load).
# Usage: bench/bench_tp.sh BUILD_DIR   (BENCH_TP_ROUNDS, default 3; BENCH_TP_TOKENS, default 64;
#                                       BENCH_TP_DTYPE f32 | bf16, default f32)
set -eu
BUILD=${1:-build}
ROUNDS=${BENCH_TP_ROUNDS:-3}
TOKENS=${BENCH_TP_TOKENS:-64}
DTYPE=${BENCH_TP_DTYPE:-f32}
BIN=$(cd "$BUILD" && pwd)/bench/bench_tp
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=$(mktemp /tmp/lmf-bench-tp-XXXXXX)
trap 'rm -f "$OUT"' EXIT
run() { # run RANKS THREADS: one JSON line, with the load average, into $OUT
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$1" -eq 1 ]; then
        line=$(OMP_NUM_THREADS=$2 "$BIN" --tokens "$TOKENS" --reps 2 --dtype "$DTYPE" | tail -1)
    else
        line=$(mpirun -np "$1" --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 \
            -x OMP_NUM_THREADS="$2" "$BIN" --tokens "$TOKENS" --reps 2 --dtype "$DTYPE" | tail -1)
    fi
    echo "$line" | sed "s/}\$/, \"load\": $load}/" | tee -a "$OUT"
}
echo "tensor-parallel decode bench: llama-110m $DTYPE, prompt 128, $TOKENS decoded tokens, $ROUNDS rounds, $(nproc) cores"
for _ in $(seq 1 "$ROUNDS"); do
    run 1 1
    run 2 1
    run 1 2
done
# the best round of each configuration
awk -F'[:,}]' '
{ for (i = 1; i < NF; i++) { k = $i; gsub(/[ "{]/, "", k); v[k] = $(i + 1) }
  key = (v["tp"] + 0) " " (v["threads"] + 0)
  if (v["decode_tok_s"] + 0 > best[key] + 0) {
      best[key] = v["decode_tok_s"]; ar[key] = v["allreduce_ms_per_tok"]; ga[key] = v["gather_ms_per_tok"]
      ld[key] = v["load"]; kv[key] = v["kv_bytes_per_block"]
  } }
END {
  printf "%-22s %12s %16s %14s %16s %6s\n", "", "decode tok/s", "all-reduce ms/tok", "gather ms/tok", "KV bytes/block", "load"
  split("1 1|2 1|1 2", order, "|")
  for (j = 1; j <= 3; j++) { k = order[j]; split(k, p, " ")
      printf "TP %s x %s thread(s)%4s %12.1f %16.3f %14.3f %16d %6s\n", p[1], p[2], "", best[k], ar[k], ga[k], kv[k], ld[k] }
  printf "TP 2 / TP 1 (one thread per rank): %.2fx\n", best["2 1"] / best["1 1"]
}' "$OUT"
