"""PyTorch reference for bench_train_step: transformers' LlamaForCausalLM with the same preset
shapes, batch, sequence length and threads; one training step is forward + backward +
torch.optim.AdamW step (+ zero_grad), as lmforge's bench times it. --mode full trains every
parameter; --mode lora puts peft LoRA (r=8, alpha=16, dropout 0) on all seven linears and
trains only the adapter. --autocast bf16 runs forward and backward under
torch.autocast("cpu", dtype=torch.bfloat16) (weights and optimizer stay f32).
--grad-ckpt turns on transformers' gradient checkpointing. Prints one JSON line like
bench_train_step."""
import argparse
import contextlib
import json
import os
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
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--grad-ckpt", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**PRESETS[a.preset], max_position_embeddings=1024, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().train()
    if a.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if a.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                               target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.autocast == "bf16" \
        else contextlib.nullcontext
    def cpu_seconds():
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    times, cpu, loss = [], 0.0, None
    for s in range(a.steps + 1):
        t0, c0 = time.perf_counter(), cpu_seconds()
        with ctx():
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        t = time.perf_counter() - t0
        loss = out.loss.item()
        if s:
            times.append(t)
            cpu += cpu_seconds() - c0
    mean = sum(times) / len(times)
    print(json.dumps({"impl": "pytorch", "mode": a.mode, "autocast": a.autocast,
                      "ckpt": int(a.grad_ckpt), "threads": a.threads, "batch": a.batch,
                      "seq": a.seq, "ms_per_step": round(mean * 1e3, 1),
                      "best_ms": round(min(times) * 1e3, 1),
                      "tokens_per_s": round(a.batch * a.seq / mean, 1),
                      "cpu_s_per_step": round(cpu / len(times), 2), "loss": round(loss, 4),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
