"""Replays a `test_optim --trace` run in PyTorch: torch.optim.AdamW with [decay, no-decay]
param groups, torch.nn.utils.clip_grad_norm_ and transformers.get_scheduler, stepping as the
Hugging Face Trainer does (clip, optimizer.step at the scheduler's current lr, scheduler.step),
and compares lr, grad_norm and final parameters with what lmforge wrote.

usage: optim_ref.py TRACE.bin SCHEDULE"""
import math
import struct
import sys

import numpy as np
import torch
from transformers import TrainingArguments, get_scheduler

LR, BETAS, EPS, WD, MAX_NORM, WARMUP_RATIO, MIN_LR_RATE = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0, 0.1, 0.1


def main():
    path, sched = sys.argv[1], sys.argv[2]
    raw = open(path, "rb").read()
    assert raw[:8] == b"OPTTRACE", "bad trace magic"
    steps, n_tensors, total, warmup = struct.unpack_from("<4i", raw, 8)
    desc = struct.unpack_from(f"<{3 * n_tensors}i", raw, 24)
    off = 24 + 12 * n_tensors
    shapes, decay = [], []
    for i in range(n_tensors):
        a, b, d = desc[3 * i : 3 * i + 3]
        shapes.append((a, b) if b else (a,))
        decay.append(bool(d))
    n = sum(math.prod(s) for s in shapes)

    def take(dtype, count):
        nonlocal off
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=off)
        off += arr.nbytes
        return arr

    p0 = take("<f4", n)
    grads = take("<f4", n * steps).reshape(steps, n)
    ours_lr = take("<f8", steps)
    ours_norm = take("<f4", steps)
    ours_final = take("<f4", n)
    assert off == len(raw), "trailing bytes in trace"

    ref_warmup = TrainingArguments(output_dir="/tmp/lmf-optim-ref", warmup_ratio=WARMUP_RATIO,
                                   report_to=[]).get_warmup_steps(total)
    assert warmup == ref_warmup, f"warmup {warmup} vs TrainingArguments {ref_warmup}"

    def split(flat):
        out, o = [], 0
        for s in shapes:
            k = math.prod(s)
            out.append(torch.tensor(np.array(flat[o : o + k])).reshape(s))
            o += k
        return out

    params = [torch.nn.Parameter(t) for t in split(p0)]
    groups = [
        {"params": [p for p, d in zip(params, decay) if d], "weight_decay": WD},
        {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=False)
    kwargs = {"min_lr_rate": MIN_LR_RATE} if sched == "cosine_with_min_lr" else None
    sch = get_scheduler(sched, opt, num_warmup_steps=warmup, num_training_steps=total,
                        scheduler_specific_kwargs=kwargs)
    max_lr_rel = max_norm_rel = 0.0
    clipped = 0
    for k in range(steps):
        for p, g in zip(params, split(grads[k])):
            p.grad = g.clone()
        norm = float(torch.nn.utils.clip_grad_norm_(params, MAX_NORM))
        clipped += norm > MAX_NORM
        lr = sch.get_last_lr()[0]
        max_lr_rel = max(max_lr_rel, abs(ours_lr[k] - lr) / max(abs(lr), 1e-300) if lr else abs(ours_lr[k]))
        max_norm_rel = max(max_norm_rel, abs(float(ours_norm[k]) - norm) / norm)
        opt.step()
        sch.step()
    ref_final = torch.cat([p.detach().reshape(-1) for p in params]).numpy()
    moved = np.abs(ref_final - p0).max()
    param_rel = np.abs(ours_final.astype(np.float64) - ref_final).max() / np.abs(ref_final).max()
    print(f"{sched}: warmup {warmup}, clipped on {clipped}/{steps} steps, max rel diff: "
          f"lr {max_lr_rel:.2e}, grad_norm {max_norm_rel:.2e}, params {param_rel:.2e} "
          f"(params moved up to {moved:.2e})")
    ok = max_lr_rel <= 1e-12 and max_norm_rel <= 1e-6 and param_rel <= 1e-6
    ok = ok and 0 < clipped < steps and moved > 1e-3
    sys.exit(0 if ok else 1)


main()
