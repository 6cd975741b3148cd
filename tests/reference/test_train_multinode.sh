#!/bin/sh
# Multi-node training (DDP, ZeRO-1 and ZeRO-3): 2 "nodes" (network namespaces with real TCP between them,
# ../shared/tools/netns-cluster) x 2 ranks. Launched the torchrun way (the same
# `lmforge train cfg` on each node with NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT /
# NPROC_PER_NODE) and through a hostfile, 4 ranks with accumulation 1 give the per-step losses
# and final weights of 1 rank with accumulation 4 (<= 1e-5, as test_train_ddp); the bytes the
# switch saw leave node1 are at least the all-reduce bytes lmforge prints; and rendezvous
# mistakes (a wrong NNODES, a node that never comes) end both sides non-zero, named. Launched
# from an accelerate config with a rank killed on node 1 and max_restarts 1, the job restarts
# on both nodes and ends bit-identical to the uninterrupted one.
# Skips (77) where namespaces cannot be made.
. "$(dirname "$0")/common.sh"
need_netns_cluster
command -v mpirun > /dev/null || { echo "SKIP: mpirun not found"; exit 77; }
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"; fi
# our own cluster, one per build directory (test_comm_multinode uses lmfd...)
export NETNS_CLUSTER_PREFIX=${NETNS_CLUSTER_PREFIX:-lmft$(printf %s "$LMF_BUILD" | cksum | cut -c1-5)-}
trap '"$NC" down >/dev/null 2>&1; rm -rf "$WORK"' EXIT INT TERM
rc=0
"$NC" up 2 || rc=$?
[ $rc -eq 0 ] || exit $rc
"$NC" check >/dev/null || { echo "FAIL: netns-cluster check"; exit 1; }
N0=${NETNS_CLUSTER_PREFIX}node0
cd "$WORK"
demo_model llama 11
lora_sft_config base.yaml "weight_decay: 0.01" "max_grad_norm: 0.5" "max_steps: 10" "logging_steps: 1" "threads: 1" "ddp_timeout: 60" "rdzv_timeout: 60"
# What netns-cluster's own mpirun passes (its .md): TCP between the namespaces, not UCX.
export OMPI_MCA_pml=ob1 OMPI_MCA_osc=^ucx OMPI_MCA_btl=tcp,self,vader \
    OMPI_MCA_btl_tcp_if_include=10.77.0.0/24 OMPI_MCA_oob_tcp_if_include=10.77.0.0/24 \
    OMPI_MCA_mpi_yield_when_idle=1
from_node1() { "$NC" status | awk -v n="${NETNS_CLUSTER_PREFIX}node1" '$1 == n {print $6}'; }
# node NODE_RANK NNODES OUT [key=value...]: the same command any node of a cluster would run
node() {
    r=$1 nn=$2 out=$3
    shift 3
    timeout -k 5 120 "$NC" exec "$r" env NNODES="$nn" NODE_RANK="$r" MASTER_ADDR="$N0" \
        MASTER_PORT=29531 NPROC_PER_NODE=2 "$LMF" train base.yaml "$@" > "$out" 2>&1
}

check "1 rank, accumulation 4" "$LMF" train base.yaml gradient_accumulation_steps=4 output_dir=one_x4

# 1. NNODES=2: node 1 started first (it waits for node 0), then node 0
before=$(from_node1)
node 1 2 node1.txt output_dir=nn & n1=$!
r0=0
node 0 2 node0.txt output_dir=nn || r0=$?
r1=0
wait $n1 || r1=$?
after=$(from_node1)
grep -E "rendezvous|NNODES|distributed" node0.txt node1.txt | sed 's/^/    /'
check "NNODES launch: node 0 exits 0 (was $r0)" test "$r0" -eq 0
check "NNODES launch: node 1 exits 0 (was $r1)" test "$r1" -eq 0
check "4 ranks on 2 nodes" grep -q "4 ranks on 2 nodes" node0.txt
check "4 ranks over NNODES == 1 rank x 4 accumulation" same_training nn one_x4
mb=$(sed -n 's/.*, \([0-9.]*\) MB all-reduced per step.*/\1/p' node0.txt | head -1)
crossed=$((after - before))
want=$(echo "${mb:-0} * 1000000 * 10 / 1" | bc)
echo "    all-reduce: $mb MB per step x 10 steps; node1 sent $crossed bytes through the switch"
check "bytes from node1 >= the all-reduce bytes lmforge printed ($want)" test "$crossed" -ge "$want" -a "$want" -gt 0
# (mpirun forwards a rank's stdout and stderr in chunks, not lines: a step line can be cut by an
# info line, so the steps are counted wherever they start)
check "rank 0 alone wrote the log (10 steps)" sh -c "test \$(grep -o 'step [0-9]*/10 ' node0.txt | sort -u | wc -l) -eq 10 && ! grep -q 'step [0-9]*/10 ' node1.txt"

# 2. the same launched from an accelerate config (each node: NODE_RANK from the environment
# wins over the file's machine_rank), with rank 3 (on node 1) killed after step 3 and
# max_restarts 1: the job restarts on both nodes from the last checkpoint and ends with the
# uninterrupted run's adapter, bit for bit
cat > accel.yaml <<YAML
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_CPU
num_machines: 2
num_processes: 4
machine_rank: 0
main_process_ip: $N0
main_process_port: 29532
mixed_precision: 'no'
rdzv_backend: static
same_network: true
use_cpu: true
YAML
acc() {
    timeout -k 5 120 "$NC" exec "$1" env NODE_RANK="$1" LMF_TEST_KILL_RANK_AT=3:3 "$LMF" train \
        base.yaml output_dir=acc save_steps=2 max_restarts=1 --launch-config accel.yaml > "acc$1.txt" 2>&1
}
acc 1 & n1=$!
r0=0
acc 0 || r0=$?
r1=0
wait $n1 || r1=$?
grep -E "launch config|restart" acc0.txt | sed 's/^/    /'
check "accelerate config + restart: both nodes exit 0 ($r0, $r1)" test "$r0" -eq 0 -a "$r1" -eq 0
check "the restart names rank 3 on node 1 and the checkpoint" grep -Eq "restart 1/1 after rank 3 \(on ${NETNS_CLUSTER_PREFIX}node1\) was killed by signal 9 \(exit 137\); resuming from acc/checkpoint-[0-9]+" acc0.txt
check "restarted 2-node adapter == uninterrupted 2-node adapter" cmp acc/adapter_model.safetensors nn/adapter_model.safetensors

# 3. the same through a hostfile (mpirun's rsh agent: netns-cluster's, as ssh would be)
"$NC" hostfile 2 2 > hosts.txt
echo "# a comment, then the hosts" | cat - hosts.txt > hostfile
rc=0
timeout -k 5 120 "$NC" exec 0 env OMPI_MCA_plm_rsh_agent="/run/netns-cluster/${NETNS_CLUSTER_PREFIX%-}/rsh-agent" \
    "$LMF" train base.yaml hostfile=hostfile output_dir=hf > hf.txt 2>&1 || rc=$?
check "hostfile launch exits 0 (was $rc)" test "$rc" -eq 0
check "hostfile: 4 ranks on 2 hosts" grep -q "4 ranks on 2 hosts" hf.txt
check "4 ranks from a hostfile == 1 rank x 4 accumulation" same_training hf one_x4
# ZeRO-3 across the nodes: parameters gathered and gradients reduce-scattered over the link
for z in 1 3; do
    rc=0
    timeout -k 5 120 "$NC" exec 0 env OMPI_MCA_plm_rsh_agent="/run/netns-cluster/${NETNS_CLUSTER_PREFIX%-}/rsh-agent" \
        "$LMF" train base.yaml hostfile=hostfile zero_stage=$z output_dir=hf_z$z > hf_z$z.txt 2>&1 || rc=$?
    check "ZeRO-$z over 2 hosts exits 0 (was $rc)" test "$rc" -eq 0
    check "ZeRO-$z: 4 ranks on 2 hosts == 1 rank x 4 accumulation" same_training hf_z$z one_x4
done

# 4. rendezvous mistakes
node 1 3 bad1.txt output_dir=bad rdzv_timeout=20 & n1=$!
r0=0
node 0 2 bad0.txt output_dir=bad rdzv_timeout=20 || r0=$?
r1=0
wait $n1 || r1=$?
sed 's/^/    /' bad0.txt bad1.txt
check "NNODES 3 vs 2: node 0 fails" test "$r0" -ne 0
check "NNODES 3 vs 2: node 1 fails" test "$r1" -ne 0
check "node 0 names the disagreement" grep -q "started with NNODES=3, node 0 with NNODES=2" bad0.txt
check "node 1 is told why" grep -q "NNODES=3 here, NNODES=2 on node 0" bad1.txt
start=$(date +%s)
r0=0
node 0 2 alone.txt output_dir=alone rdzv_timeout=2 || r0=$?
el=$(($(date +%s) - start))
sed 's/^/    /' alone.txt
check "a node that never comes: node 0 fails after rdzv_timeout (${el} s)" test "$r0" -ne 0 -a "$el" -le 10
check "and says which node is missing" grep -q "still missing NODE_RANK 1" alone.txt
finish
