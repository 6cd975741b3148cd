"""Reference loss / logits / gradients for one training batch, computed with transformers (float32).

usage: hf_ref.py --model DIR --batch BATCH.json --out OUT.safetensors [--adapter ADAPTER_DIR] [--device cpu]

BATCH.json: {"input_ids": [[...]*T]*B, "labels": same shape (unshifted, -100 = ignore),
             optional "position_ids" (default 0..T-1 per row), optional "segment_ids" (default all 0)}.
A run of consecutive equal segment ids in a row is one packed sequence; tokens attend only within it,
causally.  The model is run separately on every segment slice (input_ids and position_ids sliced), and the
logits are concatenated back into [B, T, V].  Token i predicts labels[i+1] when i+1 is in the same segment
and labels[i+1] != -100; the last token of a segment predicts nothing.
loss = sum of cross-entropies over counted targets / count (0 when nothing is counted).

OUT.safetensors (float32): "loss" [1], "logits" [B, T, V], and "grad/<name>":
  * without --adapter: every model parameter, HF names (tied embeddings: only model.embed_tokens.weight);
  * with --adapter (PEFT LoRA dir): only the LoRA parameters, named as in adapter_model.safetensors
    (e.g. grad/base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight); base weights frozen.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

from ref_model import load_model

IGNORE = -100


def load_batch(path):
    with open(path) as f:
        b = json.load(f)
    ids = torch.tensor(b["input_ids"], dtype=torch.long)
    if ids.dim() != 2 or ids.shape[1] == 0:
        sys.exit("input_ids must be B rows of equal, non-zero length")
    out = {"input_ids": ids}
    for key, default in (("labels", None), ("position_ids", torch.arange(ids.shape[1]).expand_as(ids)),
                         ("segment_ids", torch.zeros_like(ids))):
        t = torch.tensor(b[key], dtype=torch.long) if key in b else default
        if t is None or t.shape != ids.shape:
            sys.exit(f"{key} missing or not of shape {list(ids.shape)}")
        out[key] = t
    return out


def segments(seg_row):
    """(start, end) of each run of equal segment ids."""
    s, ids = 0, seg_row.tolist()
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[s]:
            yield s, i
            s = i


def forward_loss(model, batch):
    ids, labels, pos, seg = batch["input_ids"], batch["labels"], batch["position_ids"], batch["segment_ids"]
    rows, picked, targets = [], [], []
    for b in range(ids.shape[0]):
        parts = []
        for s, e in segments(seg[b]):
            logits = model(input_ids=ids[b:b + 1, s:e], position_ids=pos[b:b + 1, s:e], use_cache=False).logits[0]
            parts.append(logits)
            tgt = labels[b, s + 1:e]
            keep = tgt != IGNORE
            picked.append(logits[:-1][keep])
            targets.append(tgt[keep])
        rows.append(torch.cat(parts, 0))
    logits = torch.stack(rows, 0)
    picked, targets = torch.cat(picked, 0), torch.cat(targets, 0)
    count = targets.numel()
    loss = F.cross_entropy(picked.float(), targets, reduction="sum") / max(count, 1)
    return loss, logits


def lora_name(name, adapter="default"):
    return ".".join(p for p in name.split(".") if p != adapter)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from safetensors.torch import load_file, save_file
    torch.manual_seed(0)
    model, _ = load_model(args.model)
    if args.adapter:
        from peft import PeftModel
        for p in model.parameters():
            p.requires_grad_(False)
        model = PeftModel.from_pretrained(model, args.adapter, is_trainable=True)
        named = {lora_name(n): p for n, p in model.named_parameters() if p.requires_grad}
        saved = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
        if set(named) != set(saved):
            sys.exit(f"trainable params != adapter file: only model {sorted(set(named) - set(saved))[:5]}, "
                     f"only file {sorted(set(saved) - set(named))[:5]}")
        for n, p in named.items():
            if not torch.equal(p.detach(), saved[n].to(p.dtype)):
                sys.exit(f"adapter weight {n} was not loaded as saved")
        frozen = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
        if frozen:
            sys.exit(f"non-LoRA parameters are trainable: {frozen[:5]}")
    else:
        named = dict(model.named_parameters())
    model.to(args.device).eval()

    batch = {k: v.to(args.device) for k, v in load_batch(args.batch).items()}
    loss, logits = forward_loss(model, batch)
    loss.backward()

    out = {"loss": loss.detach().reshape(1), "logits": logits.detach()}
    for n, p in named.items():
        out["grad/" + n] = p.grad if p.grad is not None else torch.zeros_like(p)
    out = {k: v.detach().float().cpu().contiguous() for k, v in out.items()}
    save_file(out, args.out)
    print(f"loss {out['loss'].item():.8f}  logits {list(out['logits'].shape)}  grads {len(named)}")


if __name__ == "__main__":
    main()
