#!/bin/sh
# Loss, logits and every gradient (full and LoRA) of lmforge against transformers / peft on
# the same Hugging Face folder and the same packed batch (segments, restarted positions,
# ignored labels). Folders are written by transformers itself (make_hf_model.py), so our
# safetensors/config readers are tested on files we did not write. Tolerances: loss and
# logits 1e-4, gradients 1e-3 (max-abs-error / max-abs-reference per tensor).
. "$(dirname "$0")/common.sh"
B="$REF/batch_packed.json"

grads() { # grads NAME MODEL_DIR [ADAPTER_DIR]
    name=$1 model=$2 adapter=${3:-}
    if [ -n "$adapter" ]; then
        check "$name: lmforge LoRA grads" "$TOOL" grads --model "$model" --batch "$B" --adapter "$adapter" --out "$WORK/$name.ours.st"
        check "$name: peft LoRA grads" "$LMF_PY" "$REF/hf_ref.py" --model "$model" --batch "$B" --adapter "$adapter" --out "$WORK/$name.ref.st"
    else
        check "$name: lmforge grads" "$TOOL" grads --model "$model" --batch "$B" --out "$WORK/$name.ours.st"
        check "$name: transformers grads" "$LMF_PY" "$REF/hf_ref.py" --model "$model" --batch "$B" --out "$WORK/$name.ref.st"
    fi
    check "$name: compare" "$LMF_PY" "$REF/compare.py" "$WORK/$name.ours.st" "$WORK/$name.ref.st" --loss-tol 1e-4 --logits-tol 1e-4 --grad-tol 1e-3
}

M="$WORK/models"
check "make llama gqa llama3-rope" "$LMF_PY" "$REF/make_hf_model.py" --arch llama --gqa --rope-scaling llama3 --seed 1 --out "$M/llama"
check "make llama tied linear-rope" "$LMF_PY" "$REF/make_hf_model.py" --arch llama --tied --rope-scaling linear --seed 2 --out "$M/llama_tied"
check "make mistral" "$LMF_PY" "$REF/make_hf_model.py" --arch mistral --gqa --seed 3 --out "$M/mistral"
check "make qwen2 (biases)" "$LMF_PY" "$REF/make_hf_model.py" --arch qwen2 --gqa --seed 4 --out "$M/qwen2"
check "make qwen3 (q/k norms)" "$LMF_PY" "$REF/make_hf_model.py" --arch qwen3 --gqa --tied --seed 5 --out "$M/qwen3"

for name in llama llama_tied mistral qwen2 qwen3; do grads "$name" "$M/$name"; done

# LoRA: adapters written by lmforge (PEFT format, random non-zero B) and loaded by peft.
check "make adapter (llama)" "$TOOL" make-adapter --model "$M/llama" --out "$M/llama_lora" --r 4 --alpha 8 --targets all --seed 7
grads llama_lora "$M/llama" "$M/llama_lora"
check "make adapter (qwen3)" "$TOOL" make-adapter --model "$M/qwen3" --out "$M/qwen3_lora" --r 2 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --seed 8
grads qwen3_lora "$M/qwen3" "$M/qwen3_lora"
check "make adapter (qwen2, subset)" "$TOOL" make-adapter --model "$M/qwen2" --out "$M/qwen2_lora" --r 4 --alpha 4 --targets v_proj,gate_proj --seed 9
grads qwen2_lora "$M/qwen2" "$M/qwen2_lora"

# Activation checkpointing against the same references, same tolerances (it is bit-identical
# to the plain path in tests/model/test_compute.c; here it meets transformers directly).
for pair in "qwen3:" "llama_lora:llama_lora"; do
    name=${pair%%:*} adapter=${pair#*:}
    model=$M/${name%_lora}
    check "$name: lmforge grads, gradient checkpointing" "$TOOL" grads --model "$model" --batch "$B" ${adapter:+--adapter "$M/$adapter"} --grad-ckpt 1 --out "$WORK/$name.ckpt.st"
    check "$name: checkpointed grads vs reference" "$LMF_PY" "$REF/compare.py" "$WORK/$name.ckpt.st" "$WORK/$name.ref.st" --loss-tol 1e-4 --logits-tol 1e-4 --grad-tol 1e-3
done
# bf16 mixed precision against the f32 reference: bf16 rounds every GEMM input by up to 2^-9
# relative, so the tolerances are those of bf16 (loss 1e-2, logits and gradients 5e-2 of the
# tensor's largest entry; measured worst 2.3e-2, a norm weight's gradient summed over every
# token), ~50x above float32's; the f32 fallback (LMF_NO_BF16=1) must meet the float32 ones.
check "llama: lmforge grads, bf16" "$TOOL" grads --model "$M/llama" --batch "$B" --bf16 1 --out "$WORK/llama.bf16.st"
check "llama: bf16 grads vs f32 reference" "$LMF_PY" "$REF/compare.py" "$WORK/llama.bf16.st" "$WORK/llama.ref.st" --loss-tol 1e-2 --logits-tol 5e-2 --grad-tol 5e-2
check "llama: lmforge grads, bf16 asked, LMF_NO_BF16=1" env LMF_NO_BF16=1 "$TOOL" grads --model "$M/llama" --batch "$B" --bf16 1 --out "$WORK/llama.nobf16.st"
check "llama: bf16 fallback grads vs reference (f32 tolerances)" "$LMF_PY" "$REF/compare.py" "$WORK/llama.nobf16.st" "$WORK/llama.ref.st" --loss-tol 1e-4 --logits-tol 1e-4 --grad-tol 1e-3

# The comparison must catch a wrong gradient: scale one by 1% on purpose.
LMF_TEST_PERTURB_GRAD=model.layers.1.self_attn.k_proj.weight "$TOOL" grads --model "$M/qwen2" --batch "$B" --out "$WORK/perturbed.st" > /dev/null 2>&1
check_fails "compare detects a 1% error in one gradient" "$LMF_PY" "$REF/compare.py" "$WORK/perturbed.st" "$WORK/qwen2.ref.st"
LMF_TEST_PERTURB_GRAD=base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "$TOOL" grads --model "$M/llama" --adapter "$M/llama_lora" --batch "$B" --out "$WORK/perturbed_lora.st" > /dev/null 2>&1
check_fails "compare detects a 1% error in one LoRA gradient" "$LMF_PY" "$REF/compare.py" "$WORK/perturbed_lora.st" "$WORK/llama_lora.ref.st"
finish
