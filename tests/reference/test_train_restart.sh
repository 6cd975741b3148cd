#!/bin/sh
# Faults and elastic restarts of `lmforge train` (docs/distributed.md, "Restarts"): a rank of
# a 2-rank DDP run SIGKILLed after step 3 (LMF_TEST_KILL_RANK_AT, first launch only) ends the job
# non-zero within the ddp_timeout, naming the rank; the last checkpoint equals the same
# checkpoint of an uninterrupted run byte for byte, and a resume from it finishes with the
# uninterrupted run's adapter. With max_restarts: 1 the same kill ends in a completed run with
# that adapter (bit-identical), the restart logged; one process supervised via MAX_RESTARTS
# alike; and a job that always fails stops after max_restarts, exiting non-zero.
. "$(dirname "$0")/common.sh"
command -v mpirun > /dev/null || { echo "SKIP: mpirun not found (scripts/install-deps.sh installs openmpi-bin)"; exit 77; }
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"; fi
cd "$WORK"
demo_model llama 11
lora_sft_config base.yaml "max_grad_norm: 0.5" "max_steps: 10" "logging_steps: 1" "save_steps: 2" "threads: 1" "ddp_timeout: 5"
same_ckpt() { # same_ckpt A B: every file of checkpoint folder A equals B's
    for f in "$1"/*; do cmp "$f" "$2/$(basename "$f")" || return 1; done
}
check "uninterrupted 2-rank run" "$LMF" train base.yaml nproc_per_node=2 output_dir=ref

# 1. rank 1 killed after step 3 (7 steps before the end), no restarts
start=$(date +%s)
rc=0
LMF_TEST_KILL_RANK_AT=1:3 "$LMF" train base.yaml nproc_per_node=2 output_dir=killed > killed.txt 2>&1 || rc=$?
el=$(($(date +%s) - start))
echo "killed run: exit $rc after $el s"
check "the job exits non-zero" test "$rc" -ne 0
check "within ddp_timeout (5 s) + the watchdog's grace" test "$el" -le 40
check "the output names the dead rank" grep -Eq "process rank 1 .*signal 9|rank 1 did not answer" killed.txt
last=$(ls -d killed/checkpoint-* | sort -t- -k2 -n | tail -1)
echo "last checkpoint: $last"
check "the last checkpoint equals the uninterrupted run's" same_ckpt "$last" "ref/$(basename "$last")"
check "no half-written checkpoint is left as checkpoint-N" sh -c "! ls -d killed/checkpoint-* | grep -v 'checkpoint-[0-9]*$'"
check "a resume from it finishes" "$LMF" train base.yaml nproc_per_node=2 output_dir=killed
check "resumed adapter == uninterrupted adapter" cmp killed/adapter_model.safetensors ref/adapter_model.safetensors

# 2. the same kill with max_restarts: 1
check "max_restarts 1: the killed job completes" sh -c "LMF_TEST_KILL_RANK_AT=1:3 '$LMF' train base.yaml nproc_per_node=2 output_dir=restarted max_restarts=1 > restarted.txt 2>&1"
grep "restart 1/1" restarted.txt || true
check "the restart is logged, naming the rank and the checkpoint" grep -Eq "restart 1/1 after rank 1 .*; resuming from restarted/checkpoint-[0-9]+" restarted.txt
check "restarted adapter == uninterrupted adapter (bit-identical)" cmp restarted/adapter_model.safetensors ref/adapter_model.safetensors

# 3. one process, MAX_RESTARTS from the environment
check "one process, uninterrupted" "$LMF" train base.yaml output_dir=one
check "one process killed at step 3 with MAX_RESTARTS=1 completes" sh -c "LMF_TEST_KILL_RANK_AT=0:3 MAX_RESTARTS=1 '$LMF' train base.yaml output_dir=one_r > one_r.txt 2>&1"
check "its restart is logged" grep -q "restart 1/1 after .*resuming from one_r/checkpoint-2" one_r.txt
check "restarted single process adapter == uninterrupted" cmp one_r/adapter_model.safetensors one/adapter_model.safetensors

# 4. a job that always fails: max_restarts relaunches, then gives up non-zero
check_fails "a job failing every time stops after max_restarts 2" sh -c "'$LMF' train base.yaml nproc_per_node=2 output_dir=bad model_name_or_path=no_such_model max_restarts=2 > bad.txt 2>&1"
check "both restarts logged" sh -c "grep -q 'restart 1/2' bad.txt && grep -q 'restart 2/2' bad.txt && ! grep -q 'restart 3/' bad.txt"
finish
