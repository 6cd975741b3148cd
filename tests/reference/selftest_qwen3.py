"""Self-test of our Qwen3 reference (qwen3_ref.py), which cannot be checked against an upstream transformers
Qwen3 (transformers 4.46 predates it).  Exits 0 when all checks pass.

usage: selftest_qwen3.py

1. Qwen2 equivalence: with q_norm/k_norm replaced by identity, head_dim = hidden/heads and no bias, our model
   equals transformers' Qwen2ForCausalLM (q/k/v biases zeroed) on the same weights: logits and all gradients
   to rel 1e-5 (untied+GQA+default RoPE, tied+MHA+llama3 RoPE).
2. Independent forward: a plain float64 implementation written from the Qwen3 description (head_dim 24 != 64/4,
   per-head q/k RMSNorm before RoPE, GQA) matches our model's float32 logits (rel 1e-5) and autograd
   gradients (rel 1e-4); the RoPE inverse frequencies use head_dim.
3. Finite differences: central differences in float64 of a few weight entries (q_norm, k_norm, q_proj,
   k_proj, embeddings) match autograd (|fd - grad| / max(|grad|, 1e-3) <= 1e-5).  For this check only,
   RMSNorm keeps float64 (transformers' Qwen2RMSNorm rounds through float32).
4. save_qwen3 -> load_qwen3 round trip is strict and exact.
"""
import math
import sys
import tempfile

import torch
import torch.nn.functional as F
import transformers
from transformers.models.qwen2 import modeling_qwen2

from qwen3_ref import Qwen3ForCausalLM, load_qwen3, qwen3_config, save_qwen3

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
            architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
FAILS = []


def check(what, rel, tol):
    ok = rel <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {what}: rel {rel:.2e} (tol {tol:.0e})")
    if not ok:
        FAILS.append(what)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            p.copy_(1 + 0.2 * n if name.endswith("norm.weight") else 0.2 * n if name.endswith("bias")
                    else 0.3 * n if "embed" in name else n / math.sqrt(p.shape[1]))


def make(cfg, seed):
    model = Qwen3ForCausalLM(qwen3_config(cfg))
    randomize(model, seed)
    return model.eval()


def batch(seed, vocab=128, t=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, t), generator=g)
    pos = torch.stack([torch.arange(t), torch.sort(torch.randperm(200, generator=g)[:t]).values])
    return ids, pos


def lm_loss(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def grads(model, ids, pos):
    model.zero_grad()
    logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    lm_loss(logits, ids).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def qwen2_equivalence(tied, kv_heads, rope_scaling, seed):
    cfg = dict(BASE, tie_word_embeddings=tied, num_key_value_heads=kv_heads, rope_scaling=rope_scaling, head_dim=16)
    ours = make(cfg, seed)
    for layer in ours.model.layers:
        layer.self_attn.q_norm = torch.nn.Identity()
        layer.self_attn.k_norm = torch.nn.Identity()
    q2cfg = transformers.Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("model_type", "head_dim")})
    q2cfg._attn_implementation = "eager"
    ref = transformers.Qwen2ForCausalLM(q2cfg).eval()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("_proj.bias") for k in missing), (missing, unexpected)
    with torch.no_grad():
        for k in missing:
            ref.get_parameter(k).zero_()
    ids, pos = batch(seed)
    lo, go = grads(ours, ids, pos)
    lr, gr = grads(ref, ids, pos)
    tag = f"qwen2 equivalence (tied={tied}, kv={kv_heads}, rope={rope_scaling and rope_scaling['rope_type']})"
    check(tag + " logits", rel(lo, lr), 1e-5)
    check(tag + " grads", max(rel(go[n], gr[n]) for n in go), 1e-5)


def naive_forward(model, ids, pos):
    """Plain float64 Qwen3 forward from the description, reading weights by HF name."""
    c = model.config
    w = {n: p.double() for n, p in model.named_parameters()}
    H, KV, hd, eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps

    def rms(x, weight):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight

    def rope(x, p):  # x [T, heads, hd]; rotate-half with the model's inv_freq (RoPE scaling is transformers')
        ang = p.double()[:, None] * model.model.rotary_emb.inv_freq.double()[None, :]
        cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    out = []
    for b in range(ids.shape[0]):
        x, t = w["model.embed_tokens.weight"][ids[b]], ids.shape[1]
        for i in range(c.num_hidden_layers):
            L = lambda s: w[f"model.layers.{i}.{s}"]  # noqa: E731
            h = rms(x, L("input_layernorm.weight"))
            q = rms((h @ L("self_attn.q_proj.weight").T).view(t, H, hd), L("self_attn.q_norm.weight"))
            k = rms((h @ L("self_attn.k_proj.weight").T).view(t, KV, hd), L("self_attn.k_norm.weight"))
            v = (h @ L("self_attn.v_proj.weight").T).view(t, KV, hd)
            q, k = rope(q, pos[b]), rope(k, pos[b])
            heads = []
            for j in range(H):
                kv = j // (H // KV)
                s = q[:, j] @ k[:, kv].T / math.sqrt(hd)
                s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
                heads.append(torch.softmax(s, -1) @ v[:, kv])
            x = x + torch.cat(heads, -1) @ L("self_attn.o_proj.weight").T
            h = rms(x, L("post_attention_layernorm.weight"))
            x = x + (F.silu(h @ L("mlp.gate_proj.weight").T) * (h @ L("mlp.up_proj.weight").T)) @ L("mlp.down_proj.weight").T
        head = w["model.embed_tokens.weight"] if c.tie_word_embeddings else w["lm_head.weight"]
        out.append(rms(x, w["model.norm.weight"]) @ head.T)
    return torch.stack(out)


def independent_forward(tied, rope_scaling, seed):
    cfg = dict(BASE, tie_word_embeddings=tied, num_key_value_heads=2, head_dim=24, rope_scaling=rope_scaling)
    model = make(cfg, seed)
    inv = model.model.rotary_emb.inv_freq
    assert inv.numel() == 12, inv.shape
    if rope_scaling is None:
        check("inv_freq uses head_dim 24", rel(inv, 10000.0 ** (-torch.arange(0, 24, 2).double() / 24)), 1e-6)
    ids, pos = batch(seed)
    lo, go = grads(model, ids, pos)
    model.zero_grad()
    ln = naive_forward(model, ids, pos)
    lm_loss(ln, ids).backward()
    tag = f"naive forward (tied={tied}, rope={rope_scaling and rope_scaling['rope_type']})"
    check(tag + " logits", rel(lo, ln), 1e-5)
    check(tag + " grads", max(rel(go[n], p.grad) for n, p in model.named_parameters()), 1e-4)


def finite_differences(seed):
    def rms_forward(self, x):  # float64-preserving RMSNorm, for this check only
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    saved = modeling_qwen2.Qwen2RMSNorm.forward
    modeling_qwen2.Qwen2RMSNorm.forward = rms_forward
    try:
        cfg = dict(BASE, tie_word_embeddings=False, num_key_value_heads=2, head_dim=24, rope_scaling=LLAMA3)
        model = make(cfg, seed).double()
        ids, pos = batch(seed)
        loss_of = lambda: lm_loss(model(input_ids=ids, position_ids=pos, use_cache=False).logits, ids)  # noqa: E731
        model.zero_grad()
        loss_of().backward()
        g = torch.Generator().manual_seed(seed)
        worst = 0.0
        for name in ("model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight",
                     "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                     "model.embed_tokens.weight"):
            p = model.get_parameter(name)
            for _ in range(3):
                idx = tuple(torch.randint(0, s, (1,), generator=g).item() for s in p.shape)
                if name == "model.embed_tokens.weight":
                    idx = (ids[0, 3].item(),) + idx[1:]
                with torch.no_grad():
                    orig = p[idx].item()
                    p[idx] = orig + 1e-6
                    up = loss_of().item()
                    p[idx] = orig - 1e-6
                    down = loss_of().item()
                    p[idx] = orig
                fd, ad = (up - down) / 2e-6, p.grad[idx].item()
                worst = max(worst, abs(fd - ad) / max(abs(ad), 1e-3))
        check("finite differences vs autograd (float64)", worst, 1e-5)
    finally:
        modeling_qwen2.Qwen2RMSNorm.forward = saved


def round_trip(seed):
    for tied in (False, True):
        cfg = dict(BASE, tie_word_embeddings=tied, num_key_value_heads=2, head_dim=24)
        model = make(cfg, seed)
        with tempfile.TemporaryDirectory() as d:
            save_qwen3(model, cfg, d)
            loaded, info = load_qwen3(d)
        bad = {k: v for k, v in info.items() if v}
        same = all(torch.equal(p, loaded.get_parameter(n)) for n, p in model.named_parameters())
        check(f"save/load round trip (tied={tied}) strict={not bad} exact={same}", 0.0 if same and not bad else 1.0, 0)


def main():
    torch.manual_seed(0)
    qwen2_equivalence(tied=False, kv_heads=2, rope_scaling=None, seed=1)
    qwen2_equivalence(tied=True, kv_heads=4, rope_scaling=LLAMA3, seed=2)
    independent_forward(tied=False, rope_scaling=None, seed=3)
    independent_forward(tied=True, rope_scaling=LLAMA3, seed=4)
    finite_differences(seed=5)
    round_trip(seed=6)
    print("FAILED: " + ", ".join(FAILS) if FAILS else "all Qwen3 reference checks passed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
