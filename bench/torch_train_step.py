"""PyTorch reference for bench_train_step: transformers' LlamaForCausalLM with the same preset
shapes, batch, sequence length and threads, forward + backward in float32 (full fine-tuning:
every parameter's gradient, as lmforge's --mode full; --mode lora uses peft on all linears).
Prints one JSON line like bench_train_step."""
import argparse
import json
import resource
import time

import torch

PRESETS = {
    "llama-110m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=12, intermediate_size=2048, vocab_size=32000),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=352, vocab_size=512),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-110m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--mode", default="full", choices=["full", "lora"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**PRESETS[a.preset], max_position_embeddings=1024, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().train()
    if a.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                               target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"]))
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
    times, loss = [], None
    for s in range(a.steps + 1):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        t = time.perf_counter() - t0
        loss = out.loss.item()
        model.zero_grad(set_to_none=False)
        if s:
            times.append(t)
    mean = sum(times) / len(times)
    print(json.dumps({"impl": "pytorch", "mode": a.mode, "threads": a.threads, "batch": a.batch,
                      "seq": a.seq, "ms_per_step": round(mean * 1e3, 1),
                      "best_ms": round(min(times) * 1e3, 1),
                      "tokens_per_s": round(a.batch * a.seq / mean, 1), "loss": round(loss, 4),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
