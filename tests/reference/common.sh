# Sourced by the reference tests: locates the build, the venv's python and a scratch folder,
# and skips (exit 77) with a reason when the test venv is missing.
set -eu
: "${LMF_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${LMF_BUILD:=$LMF_SRC/build}"
: "${LMF_PY:=$LMF_SRC/.venv/bin/python}"
if [ ! -x "$LMF_PY" ] || ! "$LMF_PY" -c "import transformers, peft" 2>/dev/null; then
    echo "SKIP: test venv with transformers/peft not found at $LMF_PY (make venv creates it)"
    exit 77
fi
LMF="$LMF_BUILD/lmforge"
TOOL="$LMF_BUILD/tests/lmf-testtool"
REF="$LMF_SRC/tests/reference"
WORK=$(mktemp -d /tmp/lmf-ref-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
fail=0
check() { # check NAME CMD...: runs CMD, records pass/fail
    _check_name=$1
    shift
    if "$@" > "$WORK/out.txt" 2>&1; then
        echo "PASS $_check_name"
    else
        echo "FAIL $_check_name"
        cat "$WORK/out.txt"
        fail=$((fail + 1))
    fi
}
check_fails() { # the opposite: CMD must exit non-zero
    _check_name=$1
    shift
    if "$@" > "$WORK/out.txt" 2>&1; then
        echo "FAIL $_check_name (expected a failure)"
        cat "$WORK/out.txt"
        fail=$((fail + 1))
    else
        echo "PASS $_check_name"
    fi
}
free_port() { # a TCP port on 127.0.0.1 that nothing listens on now
    "$LMF_PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}
need_netns_cluster() { # NC: the netns-cluster tool; skips (77) where namespaces cannot be made
    NC=${LMF_NETNS_CLUSTER:-$LMF_SRC/../shared/tools/netns-cluster}
    [ -x "$NC" ] || { echo "SKIP: netns-cluster not found at $NC"; exit 77; }
    [ "$(id -u)" -eq 0 ] || { echo "SKIP: multi-node test needs root (network namespaces)"; exit 77; }
    ip netns list >/dev/null 2>&1 || { echo "SKIP: 'ip netns' unavailable"; exit 77; }
}
check_said() { # check_said NAME PATTERN: the last check's output (out.txt) matches PATTERN
    if grep -q "$2" "$WORK/out.txt"; then
        echo "PASS $1"
    else
        echo "FAIL $1: no \"$2\" in:"
        cat "$WORK/out.txt"
        fail=$((fail + 1))
    fi
}
demo_model() { # demo_model ARCH SEED: ./tok (a 400-token BPE trained on data/demo) and ./model
    check "train a tokenizer on the demo corpus" "$LMF" tokenizer train --corpus "$LMF_SRC/data/demo/corpus.txt" --vocab-size 400 --out tok
    check "init a tiny $1 model sized to it" "$LMF" init-model --arch "$1" --preset tiny --seed "$2" --tokenizer tok --out model
}
finish() {
    if [ "$fail" -ne 0 ]; then
        echo "$fail check(s) failed"
        exit 1
    fi
}
# same_training A B [lora|full] [STEPS]: two training runs' outputs agree: their per-step losses
# (trainer_log.jsonl; the last STEPS both logged, all of them when STEPS is 0 or absent, and then
# the counts must match) to 1e-5 relative, and their final weights (adapter or model) to 1e-5 per
# tensor as ||a - b|| / ||b||. Ranks sum gradients in another order than one rank accumulates
# them, and Adam turns last-bit differences of nearly cancelling gradients into visible ones on
# single elements (seen 2e-5 of a tensor's largest weight), so the worst element is only printed.
same_training() {
    "$LMF_PY" - "$1" "$2" "${3:-lora}" "${4:-0}" <<'PY'
import json, sys
from safetensors.torch import load_file
a, b, kind, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
la = [json.loads(l)["loss"] for l in open(f"{a}/trainer_log.jsonl")]
lb = [json.loads(l)["loss"] for l in open(f"{b}/trainer_log.jsonl")]
if steps:
    assert min(len(la), len(lb)) >= steps, (len(la), len(lb))
    la, lb = la[-steps:], lb[-steps:]
else:
    assert len(la) == len(lb) > 0, (len(la), len(lb))
dl = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
f = "adapter_model.safetensors" if kind == "lora" else "model.safetensors"
wa, wb = load_file(f"{a}/{f}"), load_file(f"{b}/{f}")
assert wa.keys() == wb.keys()
rel = lambda x, y: ((x - y).norm() / y.norm().clamp_min(1e-30)).item()
dw = max(rel(wa[k].double(), wb[k].double()) for k in wa)
de = max(((wa[k].double() - wb[k].double()).abs().max() / wb[k].double().abs().max().clamp_min(1e-30)).item() for k in wa)
print(f"{a} vs {b}: losses max rel {dl:.2e}, weights rel (per tensor, Frobenius) {dw:.2e}, worst element {de:.2e}")
sys.exit(0 if dl <= 1e-5 and dw <= 1e-5 else 1)
PY
}
# lora_sft_config FILE [LINE...]: the LoRA SFT run of the tiny ./model that the training tests
# share (48 demo_sft examples, chatml, 64 tokens, batch 2, lr 1e-3 cosine with 2 warmup steps),
# followed by each LINE ("key: value") as given.
lora_sft_config() {
    _f=$1
    shift
    cat > "$_f" <<YAML
model_name_or_path: model
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 4
dataset: demo_sft
dataset_dir: $LMF_SRC/data/demo
max_samples: 48
template: chatml
cutoff_len: 64
per_device_train_batch_size: 2
learning_rate: 1.0e-3
lr_scheduler_type: cosine
warmup_steps: 2
YAML
    for _l in "$@"; do printf '%s\n' "$_l" >> "$_f"; done
}
