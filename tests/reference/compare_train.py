"""Compare an `lmforge train` run with ref_trainer.py's run on the same batches: per-step loss, lr and
grad norm, and the final trained weights.

usage: compare_train.py --ours-log trainer_log.jsonl --ours-weights FILE.safetensors --ref DIR
                        [--loss-tol 1e-4] [--weight-tol 1e-4] [--norm-tol 1e-4] [--initial FILE.safetensors]
                        [--min-clipped N] [--min-unclipped N]

trainer_log.jsonl must hold every step (logging_steps: 1); its numbers have 6 significant digits, so the
comparison cannot see below ~5e-6 relative.  Loss, lr and grad norm: |ours - ref| / |ref| per step (lr 0 must be
0).  Weights: per tensor max|ours - ref| / max|ref| (the measure of compare.py), every name of the reference
must be in ours with the same shape.  --initial: also prints how far training moved the weights (per tensor
max|ref - initial| / max|ref|), to show the tolerance is far below what training changed.  --min-clipped: at
least N steps had a reference grad norm above max_grad_norm, i.e. clipping acted; --min-unclipped: at least N
did not (on a clipped step the gradients' overall scale cannot show in the weights, only in the grad norm).
Prints the largest errors and exits 1 on any failure.
"""
import argparse
import json
import sys

from safetensors.torch import load_file

from compare import rel_err


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours-log", required=True)
    ap.add_argument("--ours-weights", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--loss-tol", type=float, default=1e-4)
    ap.add_argument("--weight-tol", type=float, default=1e-4)
    ap.add_argument("--norm-tol", type=float, default=1e-4)
    ap.add_argument("--initial")
    ap.add_argument("--min-clipped", type=int, default=0)
    ap.add_argument("--min-unclipped", type=int, default=0)
    args = ap.parse_args()

    with open(args.ours_log) as f:
        ours = [json.loads(line) for line in f]
    with open(f"{args.ref}/steps.json") as f:
        ref = json.load(f)
    failures = []
    if [r["current_steps"] for r in ours] != [r["step"] for r in ref]:
        failures.append(f"steps: ours logged {[r['current_steps'] for r in ours]}, reference ran {len(ref)}")
    worst = {"loss": (0.0, 0), "lr": (0.0, 0), "grad_norm": (0.0, 0)}
    tol = {"loss": args.loss_tol, "lr": 1e-5, "grad_norm": args.norm_tol}
    for o, r in zip(ours, ref):
        for key in worst:
            a, b = float(o[key]), float(r[key])
            e = abs(a - b) / abs(b) if b != 0 else (0.0 if a == 0 else float("inf"))
            if e > worst[key][0]:
                worst[key] = (e, r["step"])
            if not e <= tol[key]:
                failures.append(f"step {r['step']} {key}: ours {a:.7g} ref {b:.7g} (rel {e:.2e} > {tol[key]:.0e})")
    print(f"{len(ref)} steps: loss {ref[0]['loss']:.6f} -> {ref[-1]['loss']:.6f}")
    for key, (e, s) in worst.items():
        print(f"max rel error of {key:9s} {e:.3e} (step {s}), tolerance {tol[key]:.0e}")
    clipped = sum(r["clipped"] for r in ref)
    print(f"grad norm above max_grad_norm (clipped) on {clipped} of {len(ref)} steps")
    if clipped < args.min_clipped:
        failures.append(f"clipping acted on {clipped} steps, fewer than {args.min_clipped}")
    if len(ref) - clipped < args.min_unclipped:
        failures.append(f"clipping left {len(ref) - clipped} steps alone, fewer than {args.min_unclipped}")

    ow, rw = load_file(args.ours_weights), load_file(f"{args.ref}/weights.safetensors")
    init = load_file(args.initial) if args.initial else None
    rows = []
    for name in sorted(rw):
        if name not in ow:
            failures.append(f"weights: {name} missing from ours")
        elif ow[name].shape != rw[name].shape:
            failures.append(f"weights: {name} shape ours {list(ow[name].shape)} ref {list(rw[name].shape)}")
        else:
            e = rel_err(ow[name], rw[name])
            moved = rel_err(init[name], rw[name]) if init is not None and name in init else float("nan")
            rows.append((e, name, moved))
            if not e <= args.weight_tol:
                failures.append(f"weights: {name} rel {e:.3e} > {args.weight_tol:.0e}")
    for name in sorted(set(ow) - set(rw)):
        failures.append(f"weights: {name} only in ours")
    rows.sort(reverse=True)
    print(f"weights: {len(rows)} tensors, max rel error {rows[0][0]:.3e} ({rows[0][1]}), tolerance "
          f"{args.weight_tol:.0e}")
    if init is not None:
        moved = [m for _, _, m in rows if m == m]
        print(f"training moved the weights by {min(moved):.3e} .. {max(moved):.3e} (per tensor, relative)")
    for e, name, m in rows[:5]:
        print(f"  {name:60s} {e:.3e}" + (f"  (moved {m:.3e})" if m == m else ""))
    for f in failures[:20]:
        print("FAIL " + f)
    if len(failures) > 20:
        print(f"... {len(failures) - 20} more failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
