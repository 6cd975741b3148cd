"""Per-token log-probabilities of a token sequence under a Hugging Face model folder (float32).

usage: hf_nll.py --model DIR --ids 1,2,3,...

Prints JSON {"mean_nll": x, "logprobs": [log p(ids[i+1] | ids[:i+1]) for i in range(n-1)]}, one causal
forward pass with positions 0..n-1 (Qwen3: our reference, qwen3_ref.py).
"""
import argparse
import json
import sys

import torch

from ref_model import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    args = ap.parse_args()
    ids = [int(x) for x in args.ids.split(",") if x.strip()]
    if len(ids) < 2:
        sys.exit("need at least 2 ids")

    model, _ = load_model(args.model)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    print(json.dumps({"mean_nll": -logp.mean().item(), "logprobs": logp.tolist()}))


if __name__ == "__main__":
    main()
