"""Our own Qwen3 reference model, built on transformers' Qwen2 modules.

transformers 4.46.3 (the newest release that runs on torch 1.13) predates Qwen3, so the test oracles
cannot use an upstream Qwen3ForCausalLM; this file defines one.  Qwen3 = Qwen2 except in attention:
  * no q/k/v/o bias unless config "attention_bias" is true (default false);
  * an explicit "head_dim" that may differ from hidden_size / num_attention_heads:
    q_proj [H*head_dim, hidden], k_proj/v_proj [KVH*head_dim, hidden], o_proj [hidden, H*head_dim];
  * per-head RMSNorm of q and k over head_dim (self_attn.q_norm.weight / self_attn.k_norm.weight,
    shape [head_dim], eps = rms_norm_eps), applied BEFORE the rotary embedding.
Everything else is transformers' Qwen2 code: embeddings, Qwen2RMSNorm, Qwen2MLP (SwiGLU), the model-level
Qwen2RotaryEmbedding (rotate-half RoPE, rope_theta, rope_scaling; it reads config.head_dim), the eager causal
mask, GQA via repeat_kv, softmax(q k^T / sqrt(head_dim)) in float32, lm_head and tie_word_embeddings.
selftest_qwen3.py validates this file (Qwen2 equivalence, a loop-based forward, finite differences).
"""
import json
import math
import os

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, apply_rotary_pos_emb, repeat_kv


class Qwen3Attention(nn.Module):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = bool(getattr(config, "attention_bias", False))
        hidden, hd = config.hidden_size, self.head_dim
        self.q_proj = nn.Linear(hidden, self.num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * hd, hidden, bias=bias)
        self.q_norm = Qwen2RMSNorm(hd, eps=config.rms_norm_eps)
        self.k_norm = Qwen2RMSNorm(hd, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, past_key_value=None,
                cache_position=None, **kwargs):
        bsz, t, _ = hidden_states.shape
        q = self.q_norm(self.q_proj(hidden_states).view(bsz, t, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(hidden_states).view(bsz, t, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(hidden_states).view(bsz, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_value is not None:
            k, v = past_key_value.update(k, v, self.layer_idx, {"sin": sin, "cos": cos, "cache_position": cache_position})
        k = repeat_kv(k, self.num_heads // self.num_kv_heads)
        v = repeat_kv(v, self.num_heads // self.num_kv_heads)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, : k.shape[-2]]
        # float32 softmax as in Qwen2 (promoted, so a float64 model stays float64 for selftest_qwen3.py)
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(bsz, t, self.num_heads * self.head_dim)
        return self.o_proj(out), None, past_key_value


class Qwen3ForCausalLM(Qwen2ForCausalLM):
    """transformers' Qwen2ForCausalLM with every layer's attention replaced by Qwen3Attention."""

    def __init__(self, config):
        super().__init__(config)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = Qwen3Attention(config, i)
        self.tie_weights()


def qwen3_config(cfg: dict) -> Qwen2Config:
    """A Qwen2Config carrying Qwen3's extra fields (head_dim, attention_bias), eager attention, no cache."""
    d = {k: v for k, v in cfg.items() if k not in ("model_type", "torch_dtype", "transformers_version")}
    d.setdefault("attention_bias", False)
    d.setdefault("head_dim", d["hidden_size"] // d["num_attention_heads"])
    d.setdefault("tie_word_embeddings", False)
    config = Qwen2Config(**d)
    config._attn_implementation = "eager"
    config.use_cache = False
    return config


def read_safetensors_dir(model_dir):
    """All tensors of model.safetensors, or of the shards named by model.safetensors.index.json."""
    from safetensors.torch import load_file
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for name in files:
        sd.update(load_file(os.path.join(model_dir, name)))
    return sd


def expected_state_keys(model):
    keys = dict(model.state_dict())
    if model.config.tie_word_embeddings:
        keys.pop("lm_head.weight", None)
    return keys


def load_qwen3(model_dir):
    """Returns (model, loading_info) with loading_info shaped like transformers' output_loading_info."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = qwen3_config(json.load(f))
    model = Qwen3ForCausalLM(config)
    sd = read_safetensors_dir(model_dir)
    expected = expected_state_keys(model)
    mismatched = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in sd and sd[k].shape != v.shape]
    bad = {m[0] for m in mismatched}
    model.load_state_dict({k: sd[k].float() for k in expected if k in sd and k not in bad}, strict=False)
    model.tie_weights()
    info = {"missing_keys": sorted(set(expected) - set(sd)), "unexpected_keys": sorted(set(sd) - set(expected)),
            "mismatched_keys": mismatched, "error_msgs": []}
    return model.float().eval(), info


def save_qwen3(model, cfg: dict, out_dir):
    """Writes config.json (cfg as given) and model.safetensors with HF names (no lm_head when tied)."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v.detach().float().contiguous().clone() for k, v in expected_state_keys(model).items()}
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
