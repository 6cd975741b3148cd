#!/bin/sh
# Inference on quantized weights (quantization_bit / infer_dtype in score, chat and api).
# - Perplexity on a fixed text (the last 20 demo_pt records, ~400 tokens) of a tiny model
#   pre-trained on demo_pt for 80 steps: each format's perplexity within its stated bound of
#   float32's (relative): q8_0 0.5 %, 4-bit 3 % (seen: q8_0 0.02 %, q4_0 0.5 %, q4_1 0.4 %,
#   nf4 0.3 %, fp4 0.2 %);
# - `lmforge api` with quantization_bit 8: the greedy completion equals the float32 server's
#   (a trained model: the top token wins by far more than 8-bit noise), and the weights line
#   reports <= 0.35x of float32; infer_dtype nf4 with a LoRA adapter beside the base
#   (lora_modules: the step's general path) gives, for the adapter and for the base, the reply
#   `lmforge chat` gives with the same settings (single-sequence path), and <= 0.3x memory;
# - a GGUF file with Q8_0 linears is served as q8_0 by default, replying as the safetensors model
#   served with infer_dtype q8_0;
# - refusals: q4_k on rows of 128 (names the tensor and 256), infer_dtype bfloat16 together with
#   quantization_bit, an unknown format.
. "$(dirname "$0")/common.sh"
cd "$WORK"
check "train a tokenizer on the demo corpus" "$LMF" tokenizer train --corpus "$LMF_SRC/data/demo/corpus.txt" --vocab-size 400 --out tok
check "init a tiny llama with an intermediate size of 384" "$LMF" init-model --arch llama --preset tiny --seed 3 --tokenizer tok --out model --ffn 384
cat > pt.yaml <<YAML
model_name_or_path: model
stage: pt
do_train: true
finetuning_type: full
dataset: demo_pt
dataset_dir: $LMF_SRC/data/demo
cutoff_len: 128
per_device_train_batch_size: 4
learning_rate: 3.0e-3
lr_scheduler_type: cosine
warmup_steps: 5
max_steps: 80
logging_steps: 20
output_dir: trained
YAML
check "pre-train it for 80 steps" sh -c "'$LMF' train pt.yaml > train.txt 2>&1"
tail -20 "$LMF_SRC/data/demo/demo_pt.jsonl" | "$LMF_PY" -c "import json, sys; print(' '.join(json.loads(l)['text'] for l in sys.stdin))" > text.txt
IDS=$("$LMF" tokenizer encode --tokenizer trained < text.txt | tr -d '[] ')
"$LMF" score --model trained --ids "$IDS" --json > f32.json
ppl_within() { # ppl_within FORMAT BOUND
    "$LMF" score --model trained --ids "$IDS" --quantize "$1" --json > "$1.json" &&
        "$LMF_PY" - "$1" "$2" <<'PY'
import json, math, sys
q, bound = sys.argv[1], float(sys.argv[2])
a, b = json.load(open(q + ".json"))["mean_nll"], json.load(open("f32.json"))["mean_nll"]
d = abs(math.exp(a) / math.exp(b) - 1)
print(f"    {q}: perplexity {math.exp(a):.4f} vs float32 {math.exp(b):.4f}: {100 * d:.3f} % (bound {100 * bound:g} %)")
sys.exit(0 if d <= bound else 1)
PY
}
check "q8_0 perplexity within 0.5 % of float32" ppl_within q8_0 0.005
for q in q4_0 q4_1 nf4 fp4; do
    check "$q perplexity within 3 % of float32" ppl_within $q 0.03
done
check_fails "q4_k on rows of 128 is refused" "$LMF" score --model trained --ids "$IDS" --quantize q4_k
check_said "  naming the tensor and the multiple" "q_proj.weight.*multiple of 256"

check "make a LoRA adapter for the trained model" "$TOOL" make-adapter --model trained --out lora_a --r 4 --alpha 64 --targets all --seed 7
cat > base.yaml <<YAML
model_name_or_path: trained
template: empty
max_new_tokens: 12
temperature: 0
threads: 1
YAML
P1=$(free_port)
P2=$(free_port)
P3=$(free_port)
API_PORT=$P1 API_MODEL_NAME=base "$LMF" api base.yaml > f32_api.log 2>&1 &
S1=$!
API_PORT=$P2 API_MODEL_NAME=base "$LMF" api base.yaml quantization_bit=8 > q8_api.log 2>&1 &
S2=$!
API_PORT=$P3 API_MODEL_NAME=base "$LMF" api base.yaml infer_dtype=nf4 lora_modules=alpha=lora_a > nf4_api.log 2>&1 &
S3=$!
cat > client.py <<'PY'
import json, os, subprocess, sys, threading, time, urllib.request
p1, p2, p3, lmf = sys.argv[1:5]
def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())
for port in (p1, p2, p3):
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                break
        except Exception:
            pass
        time.sleep(0.1)
fails = 0
def check(name, ok, info=""):
    global fails
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {info}"))
    fails += not ok
PROMPTS = ["Once a yellow frog", "The happy cat walked", "A small red"]
def complete(port, prompt):
    r = post(port, "/v1/completions", {"model": "base", "prompt": prompt, "max_tokens": 16,
                                       "temperature": 0, "logprobs": 1})
    c = r["choices"][0]
    return c["text"], c["logprobs"]["token_logprobs"]
f32 = {p: complete(p1, p) for p in PROMPTS}
q8 = {p: complete(p2, p) for p in PROMPTS}
check("q8_0 greedy completions == float32's", all(f32[p][0] == q8[p][0] for p in PROMPTS),
      {p: (f32[p][0], q8[p][0]) for p in PROMPTS})
worst = max(abs(a - b) for p in PROMPTS for a, b in zip(f32[p][1], q8[p][1]))
print(f"    q8_0 vs float32: largest token logprob difference {worst:.2e}")
check("q8_0 token logprobs within 0.05 of float32's", worst < 0.05, worst)
def chat_cli(extra, prompt):
    out = subprocess.run([lmf, "chat", "base.yaml", "--prompt", prompt, "infer_dtype=nf4"] + extra,
                         capture_output=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    reply = out.stdout.split(b"assistant: ", 1)[-1]
    return (reply[:-1] if reply.endswith(b"\n") else reply).decode()
def chat_api(model, prompt):
    r = post(p3, "/v1/chat/completions", {"model": model, "max_tokens": 12, "temperature": 0,
                                          "messages": [{"role": "user", "content": prompt}]})
    return r["choices"][0]["message"]["content"]
ref = {(m, p): chat_cli(["adapter_name_or_path=lora_a"] if m == "alpha" else [], p)
       for m in ("base", "alpha") for p in PROMPTS}
jobs = list(ref) * 2
got = [None] * len(jobs)
def run(i):
    got[i] = chat_api(*jobs[i])
ts = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
[t.start() for t in ts]
[t.join() for t in ts]
bad = [(jobs[i], got[i], ref[jobs[i]]) for i in range(len(jobs)) if got[i] != ref[jobs[i]]]
check(f"nf4: {len(jobs)} concurrent chats (base and adapter mixed) == `lmforge chat` alone", not bad, bad)
check("nf4: the adapter changes the replies", any(ref[("base", p)] != ref[("alpha", p)] for p in PROMPTS), ref)
sys.exit(1 if fails else 0)
PY
if "$LMF_PY" client.py "$P1" "$P2" "$P3" "$LMF"; then
    echo "PASS quantized serving client checks"
else
    echo "FAIL quantized serving client checks (server logs follow)"
    cat f32_api.log q8_api.log nf4_api.log
    fail=$((fail + 1))
fi
kill -TERM "$S1" "$S2" "$S3"
wait "$S1" "$S2" "$S3" || true
ratio() { # ratio LOG MAX: the weights ratio the server printed is <= MAX
    r=$(sed -n 's/.*float32 (\([0-9.]*\)x)$/\1/p' "$1" | head -1)
    echo "    weights ratio: $r (at most $2)"
    [ -n "$r" ] && awk -v r="$r" -v m="$2" 'BEGIN { exit !(r <= m) }'
}
check "q8_0 server: weights <= 0.35x float32" ratio q8_api.log 0.35
check "nf4 server: weights <= 0.3x float32" ratio nf4_api.log 0.3
# A GGUF file with Q8_0 linears is served in Q8_0 (infer_dtype auto), its replies those of the
# safetensors model served with infer_dtype q8_0; infer_dtype float32 serves it dequantized.
printf 'model_name_or_path: trained\nexport_dir: q8.gguf\nexport_quantization_bit: 8\n' > export.yaml
check "export the trained model to GGUF (Q8_0)" "$LMF" export export.yaml
"$LMF" chat base.yaml --prompt "Once a yellow frog" --prompt "A small red" infer_dtype=q8_0 > st_q8.txt 2>/dev/null
check "chat on the Q8_0 GGUF (infer_dtype auto)" sh -c "'$LMF' chat base.yaml model_name_or_path=q8.gguf --prompt 'Once a yellow frog' --prompt 'A small red' > gguf_q8.txt 2> gguf_q8.log"
check "  says it serves the file's Q8_0 blocks as q8_0" grep -q "holds Q8_0 blocks: serving them as q8_0" gguf_q8.log
check "  replies as the safetensors model with infer_dtype q8_0" cmp st_q8.txt gguf_q8.txt
check "infer_dtype float32 on the GGUF serves it dequantized" sh -c "'$LMF' chat base.yaml model_name_or_path=q8.gguf infer_dtype=float32 --prompt hi 2>&1 | grep -vq 'serving them as'"
check_fails "infer_dtype bfloat16 with quantization_bit is refused" "$LMF" chat base.yaml --prompt hi infer_dtype=bfloat16 quantization_bit=8
check_said "  naming both keys" "infer_dtype.*quantization_bit"
check_fails "an unknown infer_dtype is refused" "$LMF" chat base.yaml --prompt hi infer_dtype=q5_0
check_said "  naming the key" "infer_dtype"
finish
