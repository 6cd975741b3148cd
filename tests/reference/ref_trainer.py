"""An independent reference trainer: transformers + peft + torch.optim.AdamW on the batches lmforge trained on.

usage: ref_trainer.py --config CFG.yaml --batches DUMP.jsonl --out DIR [--model DIR] [--adapter DIR]
                      [--perturb decay-all|lr]

CFG.yaml is the LLaMA-Factory YAML given to `lmforge train`; it is read here with PyYAML and only these keys
are used, with Hugging Face TrainingArguments' defaults: finetuning_type (lora|full), learning_rate (5e-5),
lr_scheduler_type (linear), warmup_steps (0) / warmup_ratio (0) as TrainingArguments.get_warmup_steps
(warmup_steps if > 0 else ceil(total * warmup_ratio)), max_steps (required here), weight_decay (0),
adam_beta1/2 (0.9/0.999), adam_epsilon (1e-8), max_grad_norm (1.0).  --model (default: the YAML's
model_name_or_path) is loaded with transformers in float32, eager attention; for LoRA --adapter (default: the
YAML's adapter_name_or_path) is wrapped with peft's PeftModel.from_pretrained(is_trainable=True) and only the
LoRA weights train.

DUMP.jsonl is what lmforge writes with LMF_TRAIN_DUMP_BATCHES: one line per micro-batch {"step", "micro", "ids",
"labels", "pos", "seg"} (B x T each; pad positions have seg -1).  Only the data comes from lmforge; everything
else is computed here by torch:
  * a run of equal seg ids (>= 0) in a row is one sequence: each sequence of a micro-batch becomes a row of
    its own (right-padded, with an attention_mask) with its pos as position_ids, so tokens see only their own
    sequence, causally (packing); seg -1 (padding) is dropped;
  * token i predicts labels[i+1] when i+1 is in the same sequence and that label != -100;
  * an optimizer step's loss = sum of token cross-entropies (reduction='sum') over every counted target of its
    micro-batches / their total count; each micro-batch's backward adds its share to the gradients;
  * torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm); torch.optim.AdamW with Hugging Face Trainer's
    two parameter groups: weight_decay on every trainable weight except biases and norm weights (the
    parameters of *RMSNorm / LayerNorm modules), 0 on those; transformers.get_scheduler(name, warmup, total)
    stepped once per optimizer step.
--perturb puts a deliberate error in the reference (for the test's negative check): decay-all also decays
norms and biases; lr multiplies the learning rate by 1.002.

Writes DIR/steps.json ([{step, loss, lr, grad_norm, clipped, targets}] per optimizer step; lr is the one the
step used, grad_norm the norm before clipping, clipped whether it exceeded max_grad_norm) and
DIR/weights.safetensors: the trained LoRA weights named as in adapter_model.safetensors, or every model
parameter named as in model.safetensors (float32).
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
import yaml

from ref_model import load_model

IGNORE = -100
HF_DEFAULTS = dict(learning_rate=5e-5, lr_scheduler_type="linear", warmup_steps=0, warmup_ratio=0.0,
                   weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0)


def read_steps(path):
    """{step: [micro-batch dicts of long tensors in micro order]}"""
    steps = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            mb = {k: torch.tensor(r[k], dtype=torch.long) for k in ("ids", "labels", "pos", "seg")}
            shapes = {tuple(v.shape) for v in mb.values()}
            if len(shapes) != 1 or len(next(iter(shapes))) != 2:
                sys.exit(f"{path}: step {r['step']} micro {r['micro']}: ids/labels/pos/seg shapes differ: {shapes}")
            steps.setdefault(r["step"], []).append((r["micro"], mb))
    out = {}
    for s, mbs in steps.items():
        mbs.sort(key=lambda x: x[0])
        if [m for m, _ in mbs] != list(range(len(mbs))):
            sys.exit(f"{path}: step {s}: micro-batches {[m for m, _ in mbs]} are not 0..n-1")
        out[s] = [mb for _, mb in mbs]
    return out


def sequences(seg_row):
    """(start, end) of each run of equal segment ids >= 0."""
    ids, s = seg_row.tolist(), 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[s]:
            if ids[s] >= 0:
                yield s, i
            s = i


def count_targets(mb):
    n = 0
    for b in range(mb["ids"].shape[0]):
        for s, e in sequences(mb["seg"][b]):
            n += int((mb["labels"][b, s + 1:e] != IGNORE).sum())
    return n


def ce_sum(model, mb):
    """Sum of token cross-entropies of the micro-batch.  Every sequence becomes a row of its own, right-padded
    (a causal model never lets a real token see the padding after it), in one forward pass."""
    seqs = [(b, s, e) for b in range(mb["ids"].shape[0]) for s, e in sequences(mb["seg"][b])]
    if not seqs:
        return torch.zeros((), dtype=torch.float64)
    n, width = len(seqs), max(e - s for _, s, e in seqs)
    ids = torch.zeros(n, width, dtype=torch.long)
    pos = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    tgt = torch.full((n, width), IGNORE, dtype=torch.long)
    for i, (b, s, e) in enumerate(seqs):
        ids[i, :e - s], pos[i, :e - s], mask[i, :e - s] = mb["ids"][b, s:e], mb["pos"][b, s:e], 1
        tgt[i, :e - s - 1] = mb["labels"][b, s + 1:e]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    return F.cross_entropy(logits.reshape(n * width, -1), tgt.reshape(-1), ignore_index=IGNORE,
                           reduction="sum").double()


def no_decay_names(model):
    """Biases and the parameters of normalisation modules (Hugging Face Trainer's no-decay group)."""
    names = set()
    for mname, mod in model.named_modules():
        is_norm = isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm")
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if is_norm or pname == "bias":
                names.add(full)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model")
    ap.add_argument("--adapter")
    ap.add_argument("--perturb", choices=["decay-all", "lr"])
    ap.add_argument("--float64", action="store_true", help="train in float64 (to gauge f32 rounding)")
    args = ap.parse_args()

    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    hp = {k: cfg.get(k, v) for k, v in HF_DEFAULTS.items()}
    hp = {k: (v if k == "lr_scheduler_type" else float(v)) for k, v in hp.items()}
    ftype = cfg.get("finetuning_type", "lora")
    if ftype not in ("lora", "full"):
        sys.exit(f"finetuning_type {ftype}: the reference does lora and full")
    total = int(cfg.get("max_steps", -1))
    if total <= 0:
        sys.exit("the reference needs max_steps > 0 in the config")
    warmup = int(hp["warmup_steps"]) if hp["warmup_steps"] > 0 else math.ceil(total * hp["warmup_ratio"])
    cfg_dir = os.path.dirname(os.path.abspath(args.config))
    model_dir = args.model or os.path.join(cfg_dir, cfg["model_name_or_path"])

    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model; more threads only spin on a busy machine
    model, _ = load_model(model_dir)
    if args.float64:
        model = model.double()
    if ftype == "lora":
        from peft import PeftModel
        adapter = args.adapter or (cfg.get("adapter_name_or_path") and
                                   os.path.join(cfg_dir, cfg["adapter_name_or_path"]))
        if not adapter:
            sys.exit("LoRA: the reference starts from an adapter (--adapter or adapter_name_or_path)")
        for p in model.parameters():
            p.requires_grad_(False)
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        if args.float64:
            model = model.double()
        from peft import get_peft_model_state_dict
        state = lambda: get_peft_model_state_dict(model)  # noqa: E731
    else:
        state = model.state_dict
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Dropout) and mod.p != 0:
            sys.exit(f"{name}: dropout {mod.p}; the comparison needs dropout 0")
    model.train()

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    nd = no_decay_names(model) if args.perturb != "decay-all" else set()
    groups = [{"params": [p for n, p in trainable if n not in nd], "weight_decay": hp["weight_decay"]},
              {"params": [p for n, p in trainable if n in nd], "weight_decay": 0.0}]
    lr = hp["learning_rate"] * (1.002 if args.perturb == "lr" else 1.0)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(hp["adam_beta1"], hp["adam_beta2"]), eps=hp["adam_epsilon"])
    from transformers import get_scheduler
    sched = get_scheduler(hp["lr_scheduler_type"], opt, num_warmup_steps=warmup, num_training_steps=total)

    steps = read_steps(args.batches)
    if sorted(steps) != list(range(total)):
        sys.exit(f"{args.batches}: steps {sorted(steps)[:3]}..{sorted(steps)[-3:]}, expected 0..{total - 1}")
    log = []
    for step in range(total):
        mbs = steps[step]
        count = sum(count_targets(mb) for mb in mbs)
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for mb in mbs:
            s = ce_sum(model, mb)
            if count:
                (s / count).backward()
            loss_sum += float(s.detach())
        gnorm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], hp["max_grad_norm"])
        step_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        log.append({"step": step + 1, "loss": loss_sum / count if count else 0.0, "lr": step_lr,
                    "grad_norm": float(gnorm), "clipped": float(gnorm) > hp["max_grad_norm"], "targets": count})

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "steps.json"), "w") as f:
        json.dump(log, f, indent=1)
    from safetensors.torch import save_file
    save_file({k: v.detach().float().contiguous() for k, v in state().items()},
              os.path.join(args.out, "weights.safetensors"))
    print(f"{ftype}: {total} steps, loss {log[0]['loss']:.6f} -> {log[-1]['loss']:.6f}, "
          f"{len(trainable)} trainable tensors, clipped on {sum(r['clipped'] for r in log)} steps")


if __name__ == "__main__":
    main()
