#!/bin/sh
# Tensor-parallel serving across 2 "nodes" (network namespaces with real TCP between them,
# ../shared/tools/netns-cluster), one rank on each: `lmforge api` with tensor_parallel_size 2
# started the torchrun way (the same command on both nodes with NNODES / NODE_RANK /
# MASTER_ADDR) and through a hostfile gives the greedy answers of tensor_parallel_size 1, token
# for token, with log-probabilities within 1e-4 (tp_client.py, in node0); the all-reduces
# crossed the switch; SIGTERM to node 0's launcher ends both nodes with status 0.
# Skips (77) where namespaces cannot be made.
. "$(dirname "$0")/common.sh"
need_netns_cluster
command -v mpirun > /dev/null || { echo "SKIP: mpirun not found"; exit 77; }
if [ -n "${ASAN_OPTIONS:-}" ]; then export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# our own cluster, one per build directory
export NETNS_CLUSTER_PREFIX=${NETNS_CLUSTER_PREFIX:-lmfp$(printf %s "$LMF_BUILD" | cksum | cut -c1-5)-}
trap '"$NC" down >/dev/null 2>&1; rm -rf "$WORK"' EXIT INT TERM
rc=0
"$NC" up 2 > /dev/null || rc=$?
[ $rc -eq 0 ] || exit $rc
"$NC" check > /dev/null || { echo "FAIL: netns-cluster check"; exit 1; }
N0=${NETNS_CLUSTER_PREFIX}node0 N1=${NETNS_CLUSTER_PREFIX}node1
cd "$WORK"
demo_model llama 11
cat > api.yaml <<YAML
model_name_or_path: $WORK/model
template: chatml
temperature: 0
max_num_seqs: 8
max_num_batched_tokens: 16
threads: 1
ddp_timeout: 60
rdzv_timeout: 60
YAML
# What netns-cluster's own mpirun passes (its .md): TCP between the namespaces, not UCX.
export OMPI_MCA_pml=ob1 OMPI_MCA_osc=^ucx OMPI_MCA_btl=tcp,self,vader \
    OMPI_MCA_btl_tcp_if_include=10.77.0.0/24 OMPI_MCA_oob_tcp_if_include=10.77.0.0/24 \
    OMPI_MCA_mpi_yield_when_idle=1
from_node1() { "$NC" status | awk -v n="$N1" '$1 == n {print $6}'; }
client() { "$NC" exec 0 "$LMF_PY" "$REF/tp_client.py" --port "$1" "$2" "$3"; }

# the reference: tensor_parallel_size 1 in node 0
"$NC" exec 0 sh -c "echo \$\$ > $WORK/one.pid; API_PORT=8100 exec $LMF api $WORK/api.yaml" > one.log 2>&1 &
check "tensor_parallel_size 1 answers" client 8100 --save one.json
kill -TERM "$(cat one.pid)"

# stop_wait PIDFILE: SIGTERM to node 0's launcher; 0 when it exits 0 within 30 s
stop_wait() {
    pid=$(cat "$1")
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "still running 30 s after SIGTERM"
    return 1
}
# equal NAME LOG...: the group's answers == the reference's
equal() {
    name=$1
    shift
    if client 8200 --against one.json > cmp.txt 2>&1; then
        echo "PASS $name: tensor_parallel_size 2 across 2 nodes == 1 ($(tail -1 cmp.txt))"
    else
        echo "FAIL $name: tensor_parallel_size 2 across 2 nodes != 1"
        cat cmp.txt
        tail -n 30 "$@"
        fail=$((fail + 1))
    fi
}

# 1. NNODES: the same command on both nodes, node 1 first (it waits for node 0)
before=$(from_node1)
"$NC" exec 1 sh -c "NNODES=2 NODE_RANK=1 MASTER_ADDR=$N0 MASTER_PORT=29541 \
    timeout -k 5 120 $LMF api $WORK/api.yaml tensor_parallel_size=2; echo \$? > $WORK/node1.rc" > node1.log 2>&1 &
n1=$!
"$NC" exec 0 sh -c "echo \$\$ > $WORK/node0.pid; NNODES=2 NODE_RANK=0 MASTER_ADDR=$N0 MASTER_PORT=29541 \
    API_PORT=8200 exec $LMF api $WORK/api.yaml tensor_parallel_size=2" > node0.log 2>&1 &
n0=$!
equal NNODES node0.log node1.log
after=$(from_node1)
grep -E "tensor parallel|NNODES" node0.log | sed 's/^/    /'
check "2 ranks on 2 nodes" grep -q "tensor parallel: 2 ranks on 2 node(s)" node0.log
crossed=$((after - before))
echo "    node1 sent $crossed bytes through the switch"
check "the collectives crossed the switch (node1 sent $crossed bytes > 100000)" test "$crossed" -gt 100000
check "SIGTERM to node 0's launcher: it exits" stop_wait node0.pid
r0=0
wait $n0 || r0=$?
wait $n1 || true
check "node 0 exits 0 (was $r0)" test "$r0" -eq 0
check "node 1 exits 0 (was $(cat node1.rc 2>/dev/null))" test "$(cat node1.rc 2>/dev/null)" = 0

# 2. a hostfile (mpirun's rsh agent: netns-cluster's, as ssh would be), one slot per node
"$NC" hostfile 1 2 > hostfile
"$NC" exec 0 sh -c "echo \$\$ > $WORK/hf.pid; OMPI_MCA_plm_rsh_agent=/run/netns-cluster/${NETNS_CLUSTER_PREFIX%-}/rsh-agent \
    API_PORT=8200 exec $LMF api $WORK/api.yaml tensor_parallel_size=2 hostfile=$WORK/hostfile" > hf.log 2>&1 &
hf=$!
equal hostfile hf.log
check "hostfile: 2 ranks on 2 nodes" grep -q "tensor parallel: 2 ranks on 2 node(s)" hf.log
check "hostfile: SIGTERM to the launcher: it exits" stop_wait hf.pid
r=0
wait $hf || r=$?
check "hostfile launch exits 0 (was $r)" test "$r" -eq 0
finish
