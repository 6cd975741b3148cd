#!/bin/sh
# `lmforge api` serving several LoRA adapters at once (lora_modules: name=path,...) and bf16
# inference weights (infer_dtype): each adapter's greedy chat reply, in a batch where requests
# for both adapters and the base run concurrently and mixed, equals `lmforge chat --prompt` with
# that single adapter (adapter_name_or_path), and the base name gives the base model's reply;
# /v1/models lists the adapters; bad lora_modules are refused. infer_dtype: bfloat16 serves and
# chat's bf16 reply equals the API's.
. "$(dirname "$0")/common.sh"
cd "$WORK"
demo_model llama 5
check "make adapter a (all linears)" "$TOOL" make-adapter --model model --out lora_a --r 4 --alpha 64 --targets all --seed 7
check "make adapter b (q, v, down)" "$TOOL" make-adapter --model model --out lora_b --r 2 --alpha 48 --targets q_proj,v_proj,down_proj --seed 8
cat > base.yaml <<YAML
model_name_or_path: model
template: chatml
max_new_tokens: 12
temperature: 0
threads: 1
YAML
sed 's/^threads: 1$/threads: 1\nlora_modules: alpha=lora_a,beta=lora_b/' base.yaml > api.yaml
PORT=$(free_port)
API_PORT=$PORT API_MODEL_NAME=base "$LMF" api api.yaml > api.log 2>&1 &
PID=$!
cat > client.py <<'PY'
import json, os, subprocess, sys, threading, time, urllib.request
port, lmf = sys.argv[1], sys.argv[2]
PROMPTS = ["hello there", "The quick fox", "tell me a story"]
def post(model, prompt):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": 12, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        break
    except Exception:
        time.sleep(0.1)
fails = 0
def check(name, ok, info=""):
    global fails
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {info}"))
    fails += not ok
models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models").read())
check("/v1/models lists the base and both adapters",
      sorted(m["id"] for m in models["data"]) == ["alpha", "base", "beta"], models)
def chat_cli(cfg, prompt):
    out = subprocess.run([lmf, "chat", cfg, "--prompt", prompt], capture_output=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    reply = out.stdout.split(b"assistant: ", 1)[-1]
    return (reply[:-1] if reply.endswith(b"\n") else reply).decode()
cfgs = {"base": "base.yaml", "alpha": "alpha.yaml", "beta": "beta.yaml"}
ref = {(m, p): chat_cli(cfgs[m], p) for m in cfgs for p in PROMPTS}
alone = {(m, p): post(m, p) for m in cfgs for p in PROMPTS}
check("each adapter served alone == `lmforge chat` with that adapter", alone == ref,
      {k: (alone[k], ref[k]) for k in ref if alone[k] != ref[k]})
check("the adapters change the output", len({ref[(m, PROMPTS[1])] for m in cfgs}) == 3, ref)
# Mixed: every (model, prompt) pair at once, twice over, so batches hold all three.
jobs = [(m, p) for _ in range(2) for m in cfgs for p in PROMPTS]
got = [None] * len(jobs)
def run(i):
    got[i] = post(*jobs[i])
ts = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
[t.start() for t in ts]
[t.join() for t in ts]
bad = [(jobs[i], got[i], ref[jobs[i]]) for i in range(len(jobs)) if got[i] != ref[jobs[i]]]
check(f"{len(jobs)} concurrent requests mixing base, alpha and beta == each alone", not bad, bad)
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                             json.dumps({"model": "gamma", "messages": [{"role": "user", "content": "x"}]}).encode(),
                             {"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=30)
    check("an unknown adapter name is 404", False, "got 200")
except urllib.error.HTTPError as e:
    check("an unknown adapter name is 404", e.code == 404, e.code)
sys.exit(1 if fails else 0)
PY
sed 's/^threads: 1$/threads: 1\nadapter_name_or_path: lora_a/' base.yaml > alpha.yaml
sed 's/^threads: 1$/threads: 1\nadapter_name_or_path: lora_b/' base.yaml > beta.yaml
if "$LMF_PY" client.py "$PORT" "$LMF"; then
    echo "PASS multi-adapter client checks"
else
    echo "FAIL multi-adapter client checks (server log follows)"
    cat api.log
    fail=$((fail + 1))
fi
kill -TERM "$PID"
wait "$PID" || true
check "the server printed the adapters it loaded" grep -q "adapter beta (r 2) from lora_b" api.log
check_fails "lora_modules without name=path is refused" "$LMF" api api.yaml lora_modules=lora_a
check_fails "a missing adapter folder is refused" "$LMF" api api.yaml lora_modules=x=nowhere
check_fails "a repeated adapter name is refused" "$LMF" api api.yaml lora_modules=x=lora_a,x=lora_b
check_fails "infer_dtype float16 is refused" "$LMF" chat base.yaml infer_dtype=float16 --prompt hi
# bf16 inference weights: the chat CLI and the API agree (same engine, same kernels).
sed 's/^threads: 1$/threads: 1\ninfer_dtype: bfloat16/' alpha.yaml > bf16.yaml
"$LMF" chat bf16.yaml --prompt "hello there" > bf16_chat.txt 2>&1 || true
check "bf16 chat replies" grep -q "assistant: " bf16_chat.txt
finish
