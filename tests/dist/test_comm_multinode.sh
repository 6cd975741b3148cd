#!/bin/sh
# lmf_comm across two "nodes" (network namespaces joined by a software switch, real TCP between
# them; ../shared/tools/netns-cluster): test_comm with 2 nodes x 2 ranks (local rank/size and
# node count checked), then a stuck rank and a SIGKILLed rank on the second node: the job must
# end non-zero within a bound, naming the rank. Skips (77) where namespaces cannot be made.
# Env: LMF_BUILD, LMF_SRC, LMF_NETNS_CLUSTER (default $LMF_SRC/../shared/tools/netns-cluster).
set -u
B=${LMF_BUILD:?}
NC=${LMF_NETNS_CLUSTER:-${LMF_SRC:?}/../shared/tools/netns-cluster}
# Our own prefix, one per build directory, so that other users of the tool (and this suite run
# from another build or worktree at the same time) are left alone.
export NETNS_CLUSTER_PREFIX=${NETNS_CLUSTER_PREFIX:-lmfd$(printf %s "$B" | cksum | cut -c1-5)-}
[ -x "$NC" ] || { echo "SKIP: netns-cluster not found at $NC"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: multi-node test needs root (network namespaces)"; exit 77; }
ip netns list >/dev/null 2>&1 || { echo "SKIP: 'ip netns' unavailable"; exit 77; }
out=$(mktemp)
trap '"$NC" down >/dev/null 2>&1; rm -f "$out"' EXIT INT TERM
"$NC" up 2 || exit $?
"$NC" check >/dev/null || { echo "FAIL: netns-cluster check"; exit 1; }
fail=0
# Waits until comm_fault's ranks are in their loop (the cut must hit a running job: mpirun
# launching onto an unreachable node hangs before any lmforge code runs).
running() {
    i=0
    until grep -q "loop now" "$1" 2>/dev/null || [ $i -ge 600 ]; do sleep 0.05; i=$((i + 1)); done
}

# 1. every collective, 4 ranks on 2 nodes
LMF_TEST_NODES=2 timeout -k 5 120 "$NC" mpirun --fail-fast -np 4 -x LMF_TEST_NODES \
    "$B/tests/test_comm" >"$out" 2>&1
rc=$?
grep -E "test_comm|bf16" "$out" | sed 's/^/    /'
[ $rc -eq 0 ] || { echo "FAIL: test_comm on 2 nodes exited $rc"; cat "$out"; fail=1; }
"$NC" status | sed 's/^/    /'
# the data really crossed the switch (the test moves several MB between the nodes)
crossed=$("$NC" status | awk '$1 ~ /node1$/ {print $5}')
[ "${crossed:-0}" -gt 1000000 ] || { echo "FAIL: only ${crossed:-0} bytes reached node1"; fail=1; }

# 2. faults on the second node (ranks 2 and 3 live there)
for mode in stuck kill; do
    start=$(date +%s.%N)
    timeout -k 5 60 "$NC" mpirun --fail-fast -np 4 "$B/tests/comm_fault" $mode 3 3 >"$out" 2>&1
    rc=$?
    el=$(echo "$(date +%s.%N) - $start" | bc)
    echo "2 nodes, $mode rank 3: exit $rc after $el s"
    grep -E "^lmforge:|noticed|comm_fault:" "$out" | sed 's/^/    /'
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: exit $rc"; cat "$out"; fail=1; }
    [ "$(echo "$el > 15" | bc)" = 0 ] || { echo "FAIL: took $el s (bound 15 s)"; fail=1; }
    want="rank 3 did not answer"
    [ $mode = kill ] && want="process rank 3 .* signal 9"
    grep -q -- "$want" "$out" || { echo "FAIL: no '$want' in the output"; cat "$out"; fail=1; }
    "$NC" reap >/dev/null 2>&1
done
# Cuts node1's cable while 4 ranks loop on all-reduces with ddp_timeout $1 and expects a
# non-zero exit within $2 s of the cut, with $3 (an extended regex) in the output; extra
# environment for the ranks (e.g. LMF_COMM_ABORT_GRACE=5) follows as $4...
cable_cut() {
    timeout_s=$1 bound=$2 want=$3
    shift 3
    "$NC" up 2 >/dev/null 2>&1
    : >"$out" # no stale "loop now" from a previous case
    fwd=""
    for kv in "$@"; do fwd="$fwd -x ${kv%%=*}"; done
    env "$@" timeout -k 5 60 "$NC" mpirun --fail-fast -np 4 $fwd \
        "$B/tests/comm_fault" loop 3 "$timeout_s" >"$out" 2>&1 &
    job=$!
    running "$out"
    "$NC" fault 1 >/dev/null 2>&1
    cut=$(date +%s.%N)
    wait $job
    rc=$?
    el=$(echo "$(date +%s.%N) - $cut" | bc)
    echo "2 nodes, node1's cable cut, ddp_timeout $timeout_s s: exit $rc, $el s after the cut"
    grep -E "^lmforge:|lost communication|Remote daemon" "$out" | sed 's/^/    /'
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: exit $rc"; cat "$out"; fail=1; }
    [ "$(echo "$el > $bound" | bc)" = 0 ] || { echo "FAIL: took $el s after the cut (bound $bound s)"; fail=1; }
    grep -Eq "$want" "$out" || { echo "FAIL: no '$want' in the output"; cat "$out"; fail=1; }
    "$NC" heal 1 >/dev/null 2>&1
    "$NC" reap >/dev/null 2>&1
}
# 3. the second node's cable cut mid-run: mpirun's daemon keepalive (--fail-fast) must end the
# job, naming the node. ddp_timeout (20 s) is above the keepalive's detection time (~11 s): a
# shorter one makes the ranks abort first, and OpenMPI 4.1's mpirun then hangs in its teardown
# trying to reach the lost daemon (docs/distributed.md).
cable_cut 20 25 "${NETNS_CLUSTER_PREFIX}node1"

# 4. the same cut with ddp_timeout 3 s: lmforge's timeout fires first and names ranks 2,3;
# mpirun's abort cannot reach node1's daemon and hangs, until the timed-out rank's watchdog
# kills mpirun (LMF_COMM_ABORT_GRACE, here 5 s): exit 137. It leans on OpenMPI's teardown
# after a lost node, which is timing dependent (seen: mpirun still hung after 28 s under ASan
# on an idle machine), so it runs only with LMF_TEST_SLOW_FAULTS=1.
if [ "${LMF_TEST_SLOW_FAULTS:-0}" = 1 ]; then
    cable_cut 3 20 "ranks 2,3 did not answer" LMF_COMM_ABORT_GRACE=5
else
    echo "SKIP case 4 (cable cut with ddp_timeout 3 s): set LMF_TEST_SLOW_FAULTS=1 to run it"
fi
[ $fail -eq 0 ] && echo "test_comm_multinode: all cases passed"
exit $fail
