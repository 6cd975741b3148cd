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
