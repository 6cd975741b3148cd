#!/bin/sh
# Data-parallel training throughput on llama-110m (random init, demo corpus packed into rows of
# SEQ tokens), the same global batch every step (8 rows): 1 rank x 2 threads (accumulation 2)
# against 2 ranks x 1 thread (accumulation 1), and 1 rank x 1 thread for the scaling efficiency,
# for LoRA and full fine-tuning, one after the other in this script. Prints tokens/s, step time,
# the all-reduce bytes and milliseconds per step, the share of the all-reduce hidden behind
# backward (lmforge's own DDP timing), and the ratios. Target (issue 5): LoRA 2 x 1 >= 0.9x of
# 1 x 2.
# Usage: bench/bench_ddp.sh BUILD_DIR   (BENCH_STEPS: optimizer steps per run, default 4)
set -eu
BUILD=${1:-build}
LMF=$(cd "$BUILD" && pwd)/lmforge
SRC=$(pwd)
STEPS=${BENCH_STEPS:-4}
SEQ=${BENCH_SEQ:-256}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d /tmp/lmf-bench-ddp-XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
"$LMF" tokenizer train --corpus "$SRC/data/demo/corpus.txt" --vocab-size 400 --out tok > /dev/null
"$LMF" init-model --arch llama --preset llama-110m --tokenizer tok --out m > /dev/null
cat > cfg.yaml <<YAML
model_name_or_path: m
stage: pt
do_train: true
dataset: demo_pt
dataset_dir: $SRC/data/demo
cutoff_len: $SEQ
packing: true
per_device_train_batch_size: 4
learning_rate: 1.0e-4
max_steps: $STEPS
logging_steps: 1
save_strategy: "no"
overwrite_output_dir: true
YAML
run() { # run NAME ARGS...: lmforge train into NAME/, its log in NAME.log
    name=$1
    shift
    "$LMF" train cfg.yaml output_dir="$name" "$@" > "$name.log" 2>&1 || { tail -5 "$name.log"; exit 1; }
}
for kind in lora full; do
    echo "== llama-110m $kind, global batch 8 x $SEQ, $STEPS steps =="
    run ${kind}_1x2 finetuning_type=$kind threads=2 gradient_accumulation_steps=2
    run ${kind}_2x1 finetuning_type=$kind threads=1 nproc_per_node=2
    run ${kind}_1x1 finetuning_type=$kind threads=1 gradient_accumulation_steps=2
    python3 - "$kind" <<'PY'
import json, re, sys
kind = sys.argv[1]
def res(name):
    r = json.load(open(f"{name}/train_results.json"))
    return r["train_tokens_per_second"], 1e3 * r["train_runtime"] / (r["train_steps_per_second"] * r["train_runtime"])
t12, s12 = res(f"{kind}_1x2"); t21, s21 = res(f"{kind}_2x1"); t11, s11 = res(f"{kind}_1x1")
print(f"{'':18} {'tokens/s':>9} {'ms/step':>9}")
for n, t, s in (("1 rank x 2 threads", t12, s12), ("2 ranks x 1 thread", t21, s21), ("1 rank x 1 thread", t11, s11)):
    print(f"{n:18} {t:9.0f} {s:9.0f}")
m = re.search(r"DDP: ([\d.]+) MB all-reduced per step; all-reduce ([\d.]+) ms per step from the first bucket to the last, ([\d.]+) ms of it after backward ended \((\d+)% hidden", open(f"{kind}_2x1.log").read())
if m:
    print(f"all-reduce: {m.group(1)} MB/step, {m.group(2)} ms/step (first bucket to last), {m.group(3)} ms exposed after backward: {m.group(4)}% hidden behind backward")
print(f"2 ranks x 1 thread / 1 rank x 2 threads: {t21 / t12:.2f}x" + ("  (target >= 0.9x)" if kind == "lora" else ""))
print(f"scaling efficiency, 2 ranks vs 1 rank x 1 thread: {t21 / (2 * t11):.0%}")
PY
    echo
done
