"""Per-token log-probabilities of a token sequence under a llama GGUF file, read independently of
lmforge: the file is parsed with numpy from the GGUF spec, F32/F16/BF16/Q8_0/Q4_0/Q4_K tensors are
dequantized here, q/k rows are put back from llama.cpp's order with the inverse of its
converter's reshape/swapaxes, and transformers' LlamaForCausalLM (float32) does the forward pass.

usage: gguf_ref.py --gguf FILE --ids 1,2,3,...   (prints JSON like hf_nll.py)
"""
import argparse
import json
import struct
import sys

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.o:self.o + n].decode("utf-8")
        self.o += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        return self.take(SCALAR[t])


def parse(path):
    data = open(path, "rb").read()
    r = Reader(data)
    assert r.take("<I") == 0x46554747, "magic"
    assert r.take("<I") in (2, 3), "version"
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    meta = {}
    for _ in range(n_kv):
        k = r.string()
        meta[k] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_t):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        infos.append((name, ne, r.take("<I"), r.take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (r.o + align - 1) // align * align
    tensors = {}
    for name, ne, typ, off in infos:
        n = int(np.prod(ne))
        tensors[name] = dequant(data, base + off, typ, n).reshape(list(reversed(ne)))
    return meta, tensors


def f16(b):
    return b.view(np.float16).astype(np.float32)


def dequant(data, off, typ, n):
    if typ == 0:
        return np.frombuffer(data, np.float32, n, off).copy()
    if typ == 1:
        return np.frombuffer(data, np.float16, n, off).astype(np.float32)
    if typ == 30:
        u = np.frombuffer(data, np.uint16, n, off).astype(np.uint32) << 16
        return u.view(np.float32)
    if typ == 8:  # Q8_0: f16 d, int8[32]
        b = np.frombuffer(data, np.uint8, n // 32 * 34, off).reshape(-1, 34)
        d = f16(b[:, :2].copy())
        q = b[:, 2:].view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    if typ == 2:  # Q4_0: f16 d, 16 bytes (low nibbles: values 0..15, high: 16..31)
        b = np.frombuffer(data, np.uint8, n // 32 * 18, off).reshape(-1, 18)
        d = f16(b[:, :2].copy())
        qs = b[:, 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float32) - 8
        return (d * q).reshape(-1)
    if typ == 12:  # Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
        b = np.frombuffer(data, np.uint8, n // 256 * 144, off).reshape(-1, 144)
        d, dmin = f16(b[:, 0:2].copy()), f16(b[:, 2:4].copy())
        s = b[:, 4:16].astype(np.int32)
        sc, mn = np.zeros((len(b), 8), np.float32), np.zeros((len(b), 8), np.float32)
        for j in range(8):
            if j < 4:
                sc[:, j], mn[:, j] = s[:, j] & 63, s[:, j + 4] & 63
            else:
                sc[:, j] = (s[:, j + 4] & 15) | ((s[:, j - 4] >> 6) << 4)
                mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
        qs = b[:, 16:].reshape(-1, 4, 32)
        out = np.zeros((len(b), 256), np.float32)
        for c in range(4):
            for h, q in ((0, qs[:, c] & 15), (1, qs[:, c] >> 4)):
                j = 2 * c + h
                out[:, 64 * c + 32 * h:64 * c + 32 * h + 32] = (d * sc[:, j:j + 1]) * q - dmin * mn[:, j:j + 1]
        return out.reshape(-1)
    sys.exit(f"unsupported ggml type {typ}")


def unpermute(w, n_head):
    # llama.cpp's converter: w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids", required=True)
    args = ap.parse_args()
    ids = [int(x) for x in args.ids.split(",") if x.strip()]
    meta, t = parse(args.gguf)
    assert meta["general.architecture"] == "llama"
    H, KV = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    C = meta["llama.embedding_length"]
    cfg = LlamaConfig(vocab_size=t["token_embd.weight"].shape[0], hidden_size=C,
                      intermediate_size=meta["llama.feed_forward_length"],
                      num_hidden_layers=meta["llama.block_count"], num_attention_heads=H,
                      num_key_value_heads=KV, rms_norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
                      rope_theta=meta["llama.rope.freq_base"],
                      max_position_embeddings=meta["llama.context_length"],
                      tie_word_embeddings="output.weight" not in t)
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"]}
    if "output.weight" in t:
        sd["lm_head.weight"] = t["output.weight"]
    for name, w in t.items():
        if name.startswith("blk."):
            _, layer, part, _ = name.split(".")
            if part == "attn_q":
                w = unpermute(w, H)
            if part == "attn_k":
                w = unpermute(w, KV)
            sd[f"model.layers.{layer}.{names[part]}.weight"] = w
    model = LlamaForCausalLM(cfg).float().eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    print(json.dumps({"mean_nll": -logp.mean().item(), "logprobs": logp.tolist()}))


if __name__ == "__main__":
    main()
