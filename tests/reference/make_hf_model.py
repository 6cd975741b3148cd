"""Write tiny random Hugging Face models and PEFT LoRA adapters for the reference tests.

usage: make_hf_model.py --arch llama|qwen2|qwen3|mistral --out DIR [--tied] [--gqa]
                        [--rope-scaling llama3|linear] [--seed N]
       make_hf_model.py --adapter-for DIR --out ADIR [--r 4] [--alpha 8]
                        [--targets q_proj,v_proj,down_proj] [--seed N] [--b-std 0.2]

Model: hidden 64, 2 layers, 4 heads, 2 kv heads with --gqa else 4, intermediate 96, vocab 128,
rms_norm_eps 1e-5, rope_theta 10000, max_position_embeddings 256; qwen3 has head_dim 24 (!= 64/4).
Weights: linear ~ N(0, 1/fan_in), embeddings ~ N(0, 0.3^2), norm weights ~ 1 + N(0, 0.2^2),
biases (qwen2 q/k/v) ~ N(0, 0.2^2).  llama/qwen2/mistral are written by transformers' save_pretrained
(safetensors), qwen3 by qwen3_ref.save_qwen3.  mistral gets sliding_window null.
rope scaling: llama3 = {factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 64}
(with head_dim 16 this covers all three frequency bands); linear = {factor 2}.  Not for mistral
(transformers 4.46 ignores rope_scaling there).
Adapter: peft get_peft_model(LoraConfig(r, alpha, targets, dropout 0, bias none, CAUSAL_LM)), lora_B set
to N(0, b_std^2) (default 0.2) so that lora_A gets non-zero gradients, saved with save_pretrained (safetensors).
"""
import argparse
import math
import sys

import torch

from ref_model import load_model

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
            bos_token_id=1, eos_token_id=2, initializer_range=0.02, attention_dropout=0.0)
ROPE = {"llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64},
        "linear": {"rope_type": "linear", "factor": 2.0}}


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.2 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.3 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[1]))


def make_model(args):
    import transformers
    cfg = dict(BASE, num_key_value_heads=2 if args.gqa else 4, tie_word_embeddings=args.tied,
               rope_scaling=ROPE.get(args.rope_scaling))
    gen = torch.Generator().manual_seed(args.seed)
    if args.arch == "qwen3":
        from qwen3_ref import Qwen3ForCausalLM, qwen3_config, save_qwen3
        cfg.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=24, attention_bias=False,
                   use_sliding_window=False, sliding_window=None, max_window_layers=2, torch_dtype="float32",
                   use_cache=True)
        model = Qwen3ForCausalLM(qwen3_config(cfg))
        randomize(model, gen)
        save_qwen3(model, cfg, args.out)
        return
    if args.arch == "llama":
        config = transformers.LlamaConfig(**cfg, attention_bias=False, mlp_bias=False)
        cls = transformers.LlamaForCausalLM
    elif args.arch == "qwen2":
        config = transformers.Qwen2Config(**cfg, use_sliding_window=False)
        cls = transformers.Qwen2ForCausalLM
    else:
        if args.rope_scaling:
            sys.exit("transformers 4.46 MistralForCausalLM ignores rope_scaling; not supported")
        config = transformers.MistralConfig(**cfg, sliding_window=None)
        cls = transformers.MistralForCausalLM
    model = cls(config).float()
    randomize(model, gen)
    model.save_pretrained(args.out, safe_serialization=True)


def make_adapter(args):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(args.seed)
    model, _ = load_model(args.adapter_for)
    model.name_or_path = args.adapter_for  # recorded as base_model_name_or_path
    alpha = int(args.alpha) if float(args.alpha).is_integer() else args.alpha
    lcfg = LoraConfig(r=args.r, lora_alpha=alpha, target_modules=args.targets.split(","), lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(args.b_std * torch.randn(p.shape, generator=gen))
    model.create_or_update_model_card = lambda _dir: None  # the README model card needs Jinja2; not wanted
    model.save_pretrained(args.out, safe_serialization=True, save_embedding_layers=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["llama", "qwen2", "qwen3", "mistral"])
    ap.add_argument("--adapter-for", metavar="DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tied", action="store_true")
    ap.add_argument("--gqa", action="store_true")
    ap.add_argument("--rope-scaling", choices=sorted(ROPE))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj,down_proj")
    ap.add_argument("--b-std", type=float, default=0.2)
    args = ap.parse_args()
    if bool(args.arch) == bool(args.adapter_for):
        ap.error("give exactly one of --arch or --adapter-for")
    make_model(args) if args.arch else make_adapter(args)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
