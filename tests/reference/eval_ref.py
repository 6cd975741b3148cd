"""Checks lmforge's eval loss against transformers (and peft) on the very batches lmforge evaluated.

The batches come from LMF_EVAL_DUMP_BATCHES (one JSON line per batch: ids, labels, pos, seg); the
loss is the mean token cross-entropy over every labelled target of all of them, computed by
hf_ref.forward_loss (segment-aware), and compared with eval_loss in lmforge's results file."""
import argparse
import json
import math
import sys

import torch

from hf_ref import forward_loss
from ref_model import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--batches", required=True)
    ap.add_argument("--results", required=True, help="eval_results.json written by lmforge")
    ap.add_argument("--step", type=int, help="only the batches dumped at this step")
    args = ap.parse_args()
    model, _ = load_model(args.model)
    if args.adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, args.adapter).eval()
    total, count = 0.0, 0
    with open(args.batches) as f:
        for line in f:
            b = json.loads(line)
            if args.step is not None and b["step"] != args.step:
                continue
            batch = {"input_ids": torch.tensor(b["ids"]), "labels": torch.tensor(b["labels"]),
                     "position_ids": torch.tensor(b["pos"]), "segment_ids": torch.tensor(b["seg"])}
            labels = batch["labels"]
            n = 0
            for r in range(labels.shape[0]):
                segs = batch["segment_ids"][r]
                for t in range(labels.shape[1] - 1):
                    n += int(labels[r, t + 1] != -100 and segs[t + 1] == segs[t])
            with torch.no_grad():
                loss, _ = forward_loss(model, batch)
            total += loss.item() * n
            count += n
    ref = total / count
    ours = json.load(open(args.results))
    print(f"eval_loss: lmforge {ours['eval_loss']:.7f} transformers {ref:.7f} over {count} tokens; "
          f"perplexity {ours['perplexity']:.5f} vs exp {math.exp(ref):.5f}")
    ok = abs(ours["eval_loss"] - ref) <= 1e-4 * abs(ref) and \
        abs(ours["perplexity"] - math.exp(ref)) <= 1e-4 * math.exp(ref)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
