#!/bin/sh
# Data-parallel training (DDP over MPI): N ranks with accumulation 1 give the per-step losses
# and final weights of 1 rank with accumulation N (f32, relative <= 1e-5), for LoRA and full
# fine-tuning, with N = 2 and 4 (oversubscribed, one thread per rank); the launch is
# `lmforge train cfg nproc_per_node=N`, which re-runs itself under mpirun. Rank 0 alone writes.
. "$(dirname "$0")/common.sh"
command -v mpirun > /dev/null || { echo "SKIP: mpirun not found (scripts/install-deps.sh installs openmpi-bin)"; exit 77; }
# Under ASan, OpenMPI's own leaks at init/finalize are suppressed by library frame
# (tests/lsan.supp), which needs full malloc stacks (OpenMPI has no frame pointers).
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"; fi
cd "$WORK"
demo_model llama 11
lora_sft_config base.yaml "weight_decay: 0.01" "max_grad_norm: 0.5" "max_steps: 10" "logging_steps: 1" "threads: 1"
for kind in lora full; do
    for n in 2 4; do
        check "$kind: 1 rank, accumulation $n" "$LMF" train base.yaml finetuning_type=$kind gradient_accumulation_steps=$n output_dir=${kind}_1x$n
        check "$kind: $n ranks (nproc_per_node), accumulation 1" sh -c "'$LMF' train base.yaml finetuning_type=$kind nproc_per_node=$n output_dir=${kind}_${n}x1 > ${kind}_$n.txt 2>&1"
        check "$kind: $n ranks == 1 rank x $n accumulation" same_training ${kind}_${n}x1 ${kind}_1x$n $kind
    done
done
check "rank 0 reports world, threads, effective batch and bytes per step" grep -q "4 ranks x 1 threads, effective batch 8 = 2 per device x 1 accumulation x 4 ranks" lora_4.txt
check "FORCE_TORCHRUN=1 NPROC_PER_NODE=2: two ranks under mpirun" sh -c "FORCE_TORCHRUN=1 NPROC_PER_NODE=2 '$LMF' train base.yaml max_steps=2 output_dir=ft2 2>&1 | grep -q '2 ranks x 1 threads'"
check "FORCE_TORCHRUN=1 alone: one rank, still through mpirun" sh -c "FORCE_TORCHRUN=1 '$LMF' train base.yaml max_steps=2 output_dir=ft1 2>&1 | grep -q 'starting 1 ranks under mpirun'"
# (counted wherever a step line starts: mpirun forwards stdout and stderr in chunks, not lines)
check "one set of outputs (rank 0 alone logs)" sh -c "test \$(grep -o 'step [0-9]*/10 ' lora_4.txt | wc -l) -eq 10"
finish
