#!/bin/sh
# `lmforge router` across nodes: netns-cluster nodes (network namespaces joined by a software
# switch, real TCP between them; ../shared/tools/netns-cluster) node1 and node2 each run an
# `lmforge api` replica of a tiny model, node0 runs the router, and router_multinode_client.py
# (in node0) checks replies, spreading, and a kill -9 of node2's replica under streamed load.
# Skips (77) where namespaces cannot be made.
. "$(dirname "$0")/common.sh"
need_netns_cluster
# our own prefix per build directory, so other users of the tool are left alone
export NETNS_CLUSTER_PREFIX=${NETNS_CLUSTER_PREFIX:-lmfr$(printf %s "$LMF_BUILD" | cksum | cut -c1-5)-}
if ! "$LMF_PY" -c "import openai" 2>/dev/null; then
    echo "SKIP: OpenAI's Python SDK is not in the test venv at $LMF_PY"
    exit 77
fi
cd "$WORK"
trap '"$NC" down >/dev/null 2>&1; rm -rf "$WORK"' EXIT INT TERM
"$NC" up 3 >/dev/null || exit $?
"$NC" check >/dev/null || { echo "FAIL: netns-cluster check"; exit 1; }
demo_model qwen2 5
cat > api.yaml <<YAML
model_name_or_path: $WORK/model
template: chatml
temperature: 0
max_num_seqs: 4
threads: 1
YAML
N1=${NETNS_CLUSTER_PREFIX}node1 N2=${NETNS_CLUSTER_PREFIX}node2
for i in 1 2; do
    "$NC" exec $i sh -c "echo \$\$ > $WORK/rep$i.pid; API_HOST=0.0.0.0 API_PORT=8001 \
        API_MODEL_NAME=tiny-chat OMP_NUM_THREADS=1 exec $LMF api $WORK/api.yaml" > rep$i.log 2>&1 &
done
"$NC" exec 0 sh -c "echo \$\$ > $WORK/router.pid; exec $LMF router --host 0.0.0.0 --port 8000 \
    --health-interval 0.5 --replicas http://$N1:8001,http://$N2:8001" > router.log 2>&1 &
if timeout -k 5 300 "$NC" exec 0 "$LMF_PY" "$REF/router_multinode_client.py" \
    --router "${NETNS_CLUSTER_PREFIX}node0:8000" --replicas "http://$N1:8001,http://$N2:8001" \
    --kill-pidfile "$WORK/rep2.pid"; then
    echo "PASS multi-node router checks"
else
    echo "FAIL multi-node router checks (logs follow)"
    tail -n 20 router.log rep1.log rep2.log
    fail=$((fail + 1))
fi
"$NC" status | sed 's/^/    /'
crossed=$("$NC" status | awk -v n="$N1" '$1 == n {print $5}')
[ "${crossed:-0}" -gt 20000 ] || { echo "FAIL: only ${crossed:-0} bytes reached node1"; fail=$((fail + 1)); }
kill -TERM "$(cat router.pid)" "$(cat rep1.pid)" 2>/dev/null
for _ in $(seq 1 300); do kill -0 "$(cat router.pid)" 2>/dev/null || kill -0 "$(cat rep1.pid)" 2>/dev/null || break; sleep 0.1; done
finish
