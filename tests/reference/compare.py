"""Compare our safetensors output (loss / logits / grad/*) with the reference written by hf_ref.py.

usage: compare.py OURS.safetensors REF.safetensors [--loss-tol 1e-4] [--logits-tol 1e-4] [--grad-tol 1e-3]

Error measure, per tensor (normwise max-relative):  rel = max|ours - ref| / max(max|ref|, 1e-30),
computed in float64.  Tolerances: "loss" -> --loss-tol, "grad/*" -> --grad-tol, anything else (logits)
-> --logits-tol.  Fails on: a name present in only one file, a shape mismatch, a non-finite value, or
rel > tol.  Prints a table (all rows when few tensors, else the worst 10 by rel/tol plus every failure)
and exits 1 on any failure, 0 otherwise.
"""
import argparse
import sys

import torch
from safetensors.torch import load_file


def rel_err(ours, ref):
    if ref.numel() == 0:
        return 0.0
    o, r = ours.double(), ref.double()
    if not (torch.isfinite(o).all() and torch.isfinite(r).all()):
        return float("inf")
    return ((o - r).abs().max() / max(r.abs().max().item(), 1e-30)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--loss-tol", type=float, default=1e-4)
    ap.add_argument("--logits-tol", type=float, default=1e-4)
    ap.add_argument("--grad-tol", type=float, default=1e-3)
    args = ap.parse_args()
    ours, ref = load_file(args.ours), load_file(args.ref)

    failures = []
    for name in sorted(set(ref) - set(ours)):
        failures.append(f"missing from ours: {name}")
    for name in sorted(set(ours) - set(ref)):
        failures.append(f"extra in ours: {name}")

    rows = []  # (ratio, name, rel, tol, ok)
    for name in sorted(set(ours) & set(ref)):
        tol = args.loss_tol if name == "loss" else args.grad_tol if name.startswith("grad/") else args.logits_tol
        if ours[name].shape != ref[name].shape:
            failures.append(f"shape {name}: ours {list(ours[name].shape)} ref {list(ref[name].shape)}")
            continue
        rel = rel_err(ours[name], ref[name])
        ok = rel <= tol
        rows.append((rel / tol if tol > 0 else float("inf"), name, rel, tol, ok))
        if not ok:
            failures.append(f"tolerance {name}: rel {rel:.3e} > {tol:.1e}")

    rows.sort(key=lambda r: (-r[0], r[1]))
    shown = rows if len(rows) <= 12 else rows[:10] + [r for r in rows[10:] if not r[4]]
    width = max([len(r[1]) for r in shown] + [4])
    print(f"{'name':<{width}}  {'rel err':>10}  {'tol':>8}  ok")
    for _, name, rel, tol, ok in shown:
        print(f"{name:<{width}}  {rel:10.3e}  {tol:8.1e}  {'yes' if ok else 'NO'}")
    if len(shown) < len(rows):
        print(f"... {len(rows) - len(shown)} more tensors within tolerance")
    for f in failures:
        print("FAIL " + f)
    print(f"{len(rows)} tensors compared, {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
