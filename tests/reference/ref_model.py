"""Shared model loader for the reference scripts in tests/reference/.

load_model(dir) loads a Hugging Face model folder (config.json + model.safetensors or shards) in float32,
eval mode, eager attention, offline.  Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
(transformers 4.46.3) and Qwen3ForCausalLM (our own reference, qwen3_ref.py).  With strict=True any
missing / unexpected / mismatched weight is an error.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def architecture(model_dir):
    archs = read_config(model_dir).get("architectures") or []
    if len(archs) != 1 or archs[0] not in SUPPORTED:
        sys.exit(f"{model_dir}: unsupported architectures {archs}; expected one of {SUPPORTED}")
    return archs[0]


def load_model(model_dir, strict=True):
    """Returns (model, loading_info); loading_info has missing/unexpected/mismatched_keys and error_msgs."""
    arch = architecture(model_dir)
    if arch == "Qwen3ForCausalLM":
        from qwen3_ref import load_qwen3
        model, info = load_qwen3(model_dir)
    else:
        import transformers
        model, info = getattr(transformers, arch).from_pretrained(
            model_dir, torch_dtype=torch.float32, attn_implementation="eager",
            output_loading_info=True, local_files_only=True, ignore_mismatched_sizes=True)
        model.config.use_cache = False
    bad = {k: v for k, v in info.items() if v}
    if strict and bad:
        sys.exit(f"{model_dir}: checkpoint does not match the model: {bad}")
    return model.float().eval(), info
