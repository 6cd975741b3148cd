"""Greedy decoding with Hugging Face transformers over a KV cache in lmforge's kv_cache_dtype formats.

transformers keeps its cache in float32; here every new key and value row is rounded the way lmforge
stores it before attention reads it (the current token's too, as lmforge writes the row into its cache
and then attends over the cache): bfloat16 (round to nearest even), or int8 rows (one (token, KV head)
row of head_dim values: scale = max|x| / 127, q = round(x * (127 / max|x|)) clamped to [-127, 127],
read back as q * scale; all in float32 as lmforge computes it). float32 leaves the cache alone.

Usage: kv_cache_ref.py --model DIR --dtype int8 --prompts prompts.json --max-new N
prompts.json is a list of lists of token ids; prints a JSON list with, per prompt, the generated ids
and the log-probability of each.
"""
import argparse
import json

import torch
from transformers import DynamicCache

from ref_model import load_model


def as_cached(x, dtype):
    if dtype == "float32":
        return x
    if dtype == "bfloat16":
        return x.to(torch.bfloat16).to(torch.float32)
    assert dtype == "int8", dtype
    amax = x.abs().amax(dim=-1, keepdim=True)
    inv = torch.where(amax > 0, torch.tensor(127.0, dtype=x.dtype) / amax, torch.zeros_like(amax))
    q = torch.round(x * inv).clamp(-127, 127)
    return q * (amax / torch.tensor(127.0, dtype=x.dtype))


class StoredCache(DynamicCache):
    """A DynamicCache whose rows hold what lmforge's cache of kv_dtype would return."""

    def __init__(self, kv_dtype):
        super().__init__()
        self.kv_dtype = kv_dtype

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        return super().update(as_cached(key_states, self.kv_dtype), as_cached(value_states, self.kv_dtype),
                              layer_idx, cache_kwargs)


def greedy(model, ids, n, kv_dtype):
    """Prefill, then n greedy tokens one step at a time: {"ids": [...], "logprobs": [...]}."""
    cache = StoredCache(kv_dtype)
    out_ids, logprobs = [], []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        for _ in range(n):
            logits = out.logits[0, -1]
            nxt = int(logits.argmax())
            out_ids.append(nxt)
            logprobs.append(torch.log_softmax(logits.double(), -1)[nxt].item())
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True)
    return {"ids": out_ids, "logprobs": logprobs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", required=True, choices=["float32", "bfloat16", "int8"])
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--max-new", type=int, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, _ = load_model(args.model)
    with open(args.prompts) as f:
        prompts = json.load(f)
    print(json.dumps([greedy(model, p, args.max_new, args.dtype) for p in prompts]))


if __name__ == "__main__":
    main()
