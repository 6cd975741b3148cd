"""Shared model loader for the reference scripts in tests/reference/.

load_model(dir) loads a Hugging Face model folder (config.json + model.safetensors or shards) in float32,
eval mode, eager attention, offline.  Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
(transformers 4.46.3) and Qwen3ForCausalLM (our own reference, qwen3_ref.py).  With strict=True any
missing / unexpected / mismatched weight is an error; so is lm_head.weight in the
file of a model with tie_word_embeddings (transformers would silently load it into the shared embedding).
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


def checkpoint_keys(model_dir):
    """Tensor names in model.safetensors or in the shards of model.safetensors.index.json."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return set(json.load(f)["weight_map"])
    from safetensors import safe_open
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        return set(f.keys())


def load_model(model_dir, strict=True):
    """Returns (model, loading_info); loading_info has missing/unexpected/mismatched_keys and error_msgs."""
    arch = architecture(model_dir)
    if arch == "Qwen3ForCausalLM":
        from qwen3_ref import load_qwen3
        model, info = load_qwen3(model_dir)
    else:
        import transformers
        transformers.utils.logging.disable_progress_bar()
        model, info = getattr(transformers, arch).from_pretrained(
            model_dir, torch_dtype=torch.float32, attn_implementation="eager",
            output_loading_info=True, local_files_only=True, ignore_mismatched_sizes=True)
        model.config.use_cache = False
        # transformers silently loads a tied model's lm_head.weight into the shared embedding: flag it
        if model.config.tie_word_embeddings and "lm_head.weight" in checkpoint_keys(model_dir):
            info["unexpected_keys"] = list(info["unexpected_keys"]) + ["lm_head.weight"]
    bad = {k: v for k, v in info.items() if v}
    if strict and bad:
        sys.exit(f"{model_dir}: checkpoint does not match the model: {bad}")
    return model.float().eval(), info
