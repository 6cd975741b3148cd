#!/bin/sh
# `lmforge api` with kv_cache_dtype float32, bfloat16 and int8 on one kv_cache_bytes: the start-up
# line reports the cache type and 2x (bf16) / 4 D / (D + 4) x (int8) the tokens of float32 in
# the same bytes, and a request longer than the float32 pool holds is served by the int8 one;
# greedy completions (prompts of token ids, prefill then decode over the cache, several at once)
# equal Hugging Face transformers' greedy decoding with its cache rows rounded as lmforge stores
# them (kv_cache_ref.py); auto is float32 with float32 weights and bfloat16 with infer_dtype
# bfloat16; `lmforge chat` with int8 gives the API's reply; a bad kv_cache_dtype
# is refused by api and chat with a message naming the file, the key and the accepted values.
. "$(dirname "$0")/common.sh"
cd "$WORK"
demo_model llama 5
BYTES=262144
cat > base.yaml <<YAML
model_name_or_path: model
template: chatml
temperature: 0
threads: 1
kv_cache_bytes: $BYTES
YAML
# Prompts of token ids (one of 300 tokens: more than the float32 pool's 256 with the answer).
"$LMF_PY" - <<'PY'
import json, random
r = random.Random(3)
prompts = [[r.randrange(3, 400) for _ in range(n)] for n in (12, 47, 130, 300)]
json.dump(prompts, open("prompts.json", "w"))
PY
N=16
for dt in float32 bfloat16 int8; do
    check "transformers greedy over a $dt cache" sh -c "PYTHONPATH='$REF' '$LMF_PY' '$REF/kv_cache_ref.py' --model model --dtype $dt --prompts prompts.json --max-new $N > ref_$dt.json"
done
# The logprobs tell the cache types apart: the references' log-probabilities of the same greedy
# tokens differ by more than 3x the tolerance (1e-4) the servers are held to.
check "the three cache types give distinguishable logprobs" "$LMF_PY" - <<'PY'
import json
ref = {dt: json.load(open(f"ref_{dt}.json")) for dt in ("float32", "bfloat16", "int8")}
for a, b in (("float32", "bfloat16"), ("float32", "int8"), ("bfloat16", "int8")):
    if [r["ids"] for r in ref[a]] != [r["ids"] for r in ref[b]]:
        print(f"{a} vs {b}: different greedy tokens")
        continue
    d = max(abs(x - y) for ra, rb in zip(ref[a], ref[b]) for x, y in zip(ra["logprobs"], rb["logprobs"]))
    print(f"{a} vs {b}: logprobs differ by up to {d:.1e}")
    assert d > 3e-4, (a, b, d)
PY
for dt in float32 bfloat16 int8; do
    sed "s/^threads: 1$/threads: 1\nkv_cache_dtype: $dt/" base.yaml > api_$dt.yaml
    PORT=$(free_port)
    API_PORT=$PORT API_MODEL_NAME=m "$LMF" api api_$dt.yaml > api_$dt.log 2>&1 &
    PID=$!
    if "$LMF_PY" - "$PORT" "$dt" "$N" <<'PY'
import json, sys, threading, time, urllib.error, urllib.request
port, dt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
for _ in range(600):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
            break
    except Exception:
        pass
    time.sleep(0.1)
prompts, ref = json.load(open("prompts.json")), json.load(open(f"ref_{dt}.json"))
TOL = 1e-4  # lmforge's float32 step matches transformers to ~1e-6; see the separation check
got = [None] * len(prompts)
def one(i):
    got[i] = post("/v1/completions", {"model": "m", "prompt": prompts[i], "max_tokens": n,
                                      "temperature": 0, "ignore_eos": True, "logprobs": 1})
threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
for t in threads:
    t.start()
for t in threads:
    t.join()
fails = 0
for i, (p, (status, body)) in enumerate(zip(prompts, got)):
    if dt == "float32" and len(p) + n > 256:
        ok = status == 400 and "KV cache" in body["error"]["message"]
        print(("PASS" if ok else "FAIL"), f"{dt}: {len(p)}-token prompt refused: the pool holds 256 tokens", "" if ok else body)
        fails += not ok
        continue
    want = post("/detokenize", {"tokens": ref[i]["ids"]})[1]["prompt"]
    text = body["choices"][0]["text"] if status == 200 else body
    lp = body["choices"][0]["logprobs"]["token_logprobs"] if status == 200 else []
    err = max((abs(a - b) for a, b in zip(lp, ref[i]["logprobs"])), default=1.0)
    ok = status == 200 and text == want and body["usage"]["completion_tokens"] == n and len(lp) == n
    ok = ok and err < TOL
    print(("PASS" if ok else "FAIL"), f"{dt}: greedy completion of the {len(p)}-token prompt == transformers over a "
          f"{dt} cache (logprobs within {err:.1e})", "" if ok else f"\n  got  {text!r}\n  want {want!r}")
    fails += not ok
sys.exit(1 if fails else 0)
PY
    then
        echo "PASS $dt: served the prompts"
    else
        echo "FAIL $dt: completions (server log follows)"
        cat api_$dt.log
        fail=$((fail + 1))
    fi
    kill -TERM "$PID"
    wait "$PID" || true
done
# The start-up lines: blocks, tokens, bytes per block and the type.
check "start-up lines report each type's capacity in $BYTES bytes" "$LMF_PY" - "$BYTES" <<'PY'
import json, re, sys
total = int(sys.argv[1])
cfg = json.load(open("model/config.json"))
D = cfg["hidden_size"] // cfg["num_attention_heads"]
rows = 2 * cfg["num_hidden_layers"] * 16 * cfg["num_key_value_heads"]  # K and V, 16-token blocks
want_bytes = {"float32": rows * D * 4, "bfloat16": rows * D * 2, "int8": rows * (D + 4)}
tokens = {}
for dt, per_block in want_bytes.items():
    line = next(l for l in open(f"api_{dt}.log") if l.startswith("KV cache:"))
    m = re.match(r"KV cache: (\d+) blocks x 16 tokens = (\d+) tokens, [\d.]+ MiB \((\d+) bytes per block, (\w+)\)", line)
    assert m, line
    blocks, toks, pb, name = int(m[1]), int(m[2]), int(m[3]), m[4]
    assert (name, pb, blocks, toks) == (dt, per_block, total // per_block, 16 * blocks), (line, per_block)
    tokens[dt] = toks
    print(line.strip())
assert tokens["bfloat16"] == 2 * tokens["float32"], tokens
assert tokens["int8"] >= 3.5 * tokens["float32"], tokens
PY
# kv_cache_dtype auto follows the weights the server infers with: float32 for float32 weights,
# bfloat16 for infer_dtype bfloat16 (as vLLM's auto follows the model's dtype).
kv_line() { # config, overrides...: the server's "KV cache:" start-up line
    PORT=$(free_port)
    API_PORT=$PORT "$LMF" api "$@" > auto.log 2>&1 &
    PID=$!
    for _ in $(seq 300); do grep -q "^KV cache:" auto.log && break; sleep 0.1; done
    kill -TERM "$PID"
    wait "$PID" || true
    grep "^KV cache:" auto.log
}
check "a server with float32 weights and kv_cache_dtype auto starts" kv_line base.yaml
check_said "... with a float32 cache" "bytes per block, float32)"
check "a server with infer_dtype bfloat16 and kv_cache_dtype auto starts" kv_line base.yaml infer_dtype=bfloat16
check_said "... with a bfloat16 cache" "bytes per block, bfloat16)"
check "a server with infer_dtype bfloat16 and kv_cache_dtype float32 starts" kv_line base.yaml infer_dtype=bfloat16 kv_cache_dtype=float32
check_said "... with a float32 cache" "bytes per block, float32)"
# chat reads kv_cache_dtype too: its greedy reply with int8 equals the int8 server's.
sed "s/^threads: 1$/threads: 1\nkv_cache_dtype: int8\nmax_new_tokens: 12/" base.yaml > chat_int8.yaml
PORT=$(free_port)
API_PORT=$PORT API_MODEL_NAME=m "$LMF" api chat_int8.yaml > api_chat.log 2>&1 &
PID=$!
check "chat with kv_cache_dtype int8 == the int8 server's chat reply" "$LMF_PY" - "$PORT" "$LMF" <<'PY'
import json, os, subprocess, sys, time, urllib.request
port, lmf = sys.argv[1], sys.argv[2]
for _ in range(600):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
            break
    except Exception:
        pass
    time.sleep(0.1)
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "tell me a story"}],
                   "max_tokens": 12, "temperature": 0}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                             {"Content-Type": "application/json"})
api = json.loads(urllib.request.urlopen(req, timeout=300).read())["choices"][0]["message"]["content"]
out = subprocess.run([lmf, "chat", "chat_int8.yaml", "--prompt", "tell me a story"], capture_output=True,
                     timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
reply = out.stdout.split(b"assistant: ", 1)[-1].decode()
reply = reply[:-1] if reply.endswith("\n") else reply
print(repr(api), repr(reply))
sys.exit(0 if out.returncode == 0 and reply == api and api else 1)
PY
kill -TERM "$PID"
wait "$PID" || true
# A bad value: refused at start, naming the file, the key and the accepted values.
sed "s/^threads: 1$/threads: 1\nkv_cache_dtype: fp8/" base.yaml > bad.yaml
for cmd in api chat; do
    # (an override is named as coming from the command line)
    if [ $cmd = api ]; then set -- bad.yaml bad.yaml; else set -- "command line" base.yaml kv_cache_dtype=fp8 --prompt hi; fi
    where=$1
    shift
    if "$LMF" $cmd "$@" > bad_$cmd.log 2>&1; then
        echo "FAIL $cmd accepted kv_cache_dtype=fp8"
        fail=$((fail + 1))
    elif grep -q "$where.*kv_cache_dtype.*fp8.*auto|float32|bfloat16|int8" bad_$cmd.log; then
        echo "PASS $cmd refuses kv_cache_dtype=fp8: $(cat bad_$cmd.log | head -1)"
    else
        echo "FAIL $cmd: unclear error for kv_cache_dtype=fp8"
        cat bad_$cmd.log
        fail=$((fail + 1))
    fi
done
finish
