#!/bin/sh
# `lmforge export` to GGUF (f32, export_quantization_bit 8 -> Q8_0, 4 -> Q4_K/Q4_0) read back by an
# independent numpy GGUF reader + transformers (gguf_ref.py): `lmforge score` on the .gguf file
# agrees with it (1e-4 of the mean NLL: same dequantized weights, so only float order differs),
# the f32 file scores exactly as the safetensors folder, the quantized files stay near it, the
# embedded tokenizer encodes as the folder's, and bad requests fail with clear errors.
. "$(dirname "$0")/common.sh"
cd "$WORK"
demo_model llama 21
IDS=1,17,250,3,99,300,12,7,311,64,2,128,5,77,390,45,200,8
score_json() { "$LMF" score --model "$1" --ids "$IDS" --json; }
agree() { # agree FILE.gguf TOL: lmforge's score of the file == the independent reader's
    score_json "$1" > ours.json && "$LMF_PY" "$REF/gguf_ref.py" --gguf "$1" --ids "$IDS" > ref.json &&
        "$LMF_PY" - ours.json ref.json "$2" <<'PY'
import json, sys
o, r = (json.load(open(p)) for p in sys.argv[1:3])
err = abs(o["mean_nll"] - r["mean_nll"]) / abs(r["mean_nll"])
lp = max(abs(a - b) for a, b in zip(o["logprobs"], r["logprobs"]))
print(f"mean NLL lmforge {o['mean_nll']:.7f} independent reader {r['mean_nll']:.7f} rel {err:.2e} max logprob diff {lp:.2e}")
sys.exit(0 if err <= float(sys.argv[3]) and lp <= 1e-3 else 1)
PY
}
near() { # near A.json B.json TOL: mean NLLs within TOL (relative)
    "$LMF_PY" - "$1" "$2" "$3" <<'PY'
import json, sys
a, b = (json.load(open(p))["mean_nll"] for p in sys.argv[1:3])
print(f"mean NLL {a:.6f} vs {b:.6f}: rel {abs(a - b) / abs(b):.2e} (tol {sys.argv[3]})")
sys.exit(0 if abs(a - b) <= float(sys.argv[3]) * abs(b) else 1)
PY
}
printf 'model_name_or_path: model\nexport_dir: f32.gguf\n' > export.yaml
check "export to GGUF (f32)" "$LMF" export export.yaml
check "export to GGUF, export_quantization_bit 8 (Q8_0)" "$LMF" export export.yaml export_dir=q8.gguf export_quantization_bit=8
check "export to GGUF, export_quantization_bit 4 (Q4_K / Q4_0)" "$LMF" export export.yaml export_dir=q4.gguf export_quantization_bit=4
check "f32 GGUF: lmforge == independent reader + transformers" agree f32.gguf 1e-4
check "Q8_0 GGUF: lmforge == independent reader + transformers" agree q8.gguf 1e-4
check "Q4 GGUF: lmforge == independent reader + transformers" agree q4.gguf 1e-4
score_json model > st.json
score_json f32.gguf > f32.json
score_json q8.gguf > q8.json
check "f32 GGUF scores exactly as the safetensors folder" cmp st.json f32.json
check "Q8_0 GGUF mean NLL within 1e-3 of f32" near q8.json st.json 1e-3
score_json q4.gguf > q4.json
check "4-bit GGUF mean NLL within 2e-2 of f32" near q4.json st.json 2e-2
check "Q4 file is under 0.3x the f32 file" sh -c "test \$(stat -c %s q4.gguf) -lt \$(( \$(stat -c %s f32.gguf) * 3 / 10 ))"
check "embedded tokenizer encodes as tokenizer.json" sh -c "'$LMF' tokenizer encode --tokenizer model < '$LMF_SRC/data/demo/corpus.txt' > a.txt && '$LMF' tokenizer encode --tokenizer q8.gguf < '$LMF_SRC/data/demo/corpus.txt' > b.txt && cmp a.txt b.txt && test -s a.txt"
# Rows of 256 and 512 values: every weight of this model is Q4_K (tiny's 128 fall back to Q4_0).
make_wide() {
    "$LMF_PY" - <<'PY'
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(3)
cfg = LlamaConfig(vocab_size=400, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)
m = LlamaForCausalLM(cfg).float()
with torch.no_grad():
    for n, p in m.named_parameters():
        if "norm" not in n:
            p.normal_(0, p.shape[-1] ** -0.5)
m.save_pretrained("wide", safe_serialization=True)
PY
}
check "a 256-wide llama from transformers" make_wide
check "export it with export_quantization_bit 4 (all Q4_K)" "$LMF" export export.yaml model_name_or_path=wide export_dir=wide_q4.gguf export_quantization_bit=4
check "Q4_K GGUF: lmforge == independent reader + transformers" agree wide_q4.gguf 1e-4
score_json wide > wide.json
score_json wide_q4.gguf > wide_q4.json
check "Q4_K GGUF mean NLL within 2e-2 of f32" near wide_q4.json wide.json 2e-2
check_fails "export_quantization_bit 6 is refused" "$LMF" export export.yaml export_dir=x.gguf export_quantization_bit=6
check_fails "export_quantization_bit without a .gguf export_dir is refused" "$LMF" export export.yaml export_dir=outdir export_quantization_bit=8
printf 'GGUF\003\000\000\000' > bad.gguf
check_fails "a truncated GGUF file is refused" "$LMF" score --model bad.gguf --ids 1,2
finish
