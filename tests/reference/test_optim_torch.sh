#!/bin/sh
# AdamW + clip_grad_norm_ + every lr schedule over 30 steps match PyTorch / transformers
# (torch.optim.AdamW with [decay, no-decay] groups, get_scheduler): lr to 1e-12 relative,
# grad_norm and final parameters to 1e-6 relative.
. "$(dirname "$0")/common.sh"
if ! "$LMF_PY" -c "import torch, numpy" 2>/dev/null; then
    echo "SKIP: torch/numpy not importable from $LMF_PY"
    exit 77
fi
DRIVER="$LMF_BUILD/tests/test_optim"
for sched in linear cosine constant constant_with_warmup cosine_with_min_lr; do
    check "$sched: lmforge trace" "$DRIVER" --trace "$sched" "$WORK/$sched.bin"
    check "$sched: AdamW + clipping + schedule == PyTorch" "$LMF_PY" "$REF/optim_ref.py" "$WORK/$sched.bin" "$sched"
    grep "max rel diff" "$WORK/out.txt" || true
done
finish
