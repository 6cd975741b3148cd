"""Drives a running `lmforge api` with OpenAI's official Python SDK and with raw HTTP
(http.client and sockets), as tests/reference/test_api_openai.sh starts it. Prints PASS/FAIL per
check and exits non-zero on any failure. The last step sends SIGTERM under load.

usage: api_openai_client.py --port P --key K --model NAME --lmforge BIN --config CFG --pid PID
"""
import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import openai

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--lmforge", required=True)
ap.add_argument("--config", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--max-new-tokens", type=int, default=16)
ap.add_argument("--max-body", type=int, required=True)
args = ap.parse_args()

HOST = "127.0.0.1"
AUTH = {"Authorization": "Bearer " + args.key}
failures = 0


def check(name, ok, detail=""):
    global failures
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)), flush=True)
    if not ok:
        failures += 1


def raw(method, path, body=None, headers=None, timeout=60):
    """(status, headers dict, body bytes) over a fresh connection."""
    c = http.client.HTTPConnection(HOST, args.port, timeout=timeout)
    h = dict(AUTH)
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def metrics():
    _, _, body = raw("GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_ready():
    for _ in range(300):
        try:
            if raw("GET", "/health", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


check("server becomes healthy (/health 200)", wait_ready())
client = openai.OpenAI(base_url=f"http://{HOST}:{args.port}/v1", api_key=args.key, max_retries=0,
                       timeout=60)
PROMPT = "What color is the fox?"
MSGS = [{"role": "user", "content": PROMPT}]

# --- models, chat, usage ------------------------------------------------------------------------
ids = [m.id for m in client.models.list().data]
check("models.list() lists the served name", ids == [args.model], ids)

chat = client.chat.completions.create(model=args.model, messages=MSGS, temperature=0)
text = chat.choices[0].message.content
check("chat: one assistant choice, finish_reason stop/length",
      len(chat.choices) == 1 and chat.choices[0].message.role == "assistant"
      and chat.choices[0].finish_reason in ("stop", "length"), chat)
st, _, tk = raw("POST", "/tokenize", {"messages": MSGS})
ntok = json.loads(tk)["count"] if st == 200 else -1
u = chat.usage
check("chat usage: prompt_tokens == /tokenize of the messages, total = prompt + completion",
      u.prompt_tokens == ntok and u.total_tokens == u.prompt_tokens + u.completion_tokens
      and 0 < u.completion_tokens <= args.max_new_tokens, (u, ntok))

# --- the API's greedy output equals `lmforge chat --prompt` ---------------------------------------
out = subprocess.run([args.lmforge, "chat", args.config, "--prompt", PROMPT], capture_output=True,
                     timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
reply = out.stdout.split(b"assistant: ", 1)[-1]
reply = reply[:-1] if reply.endswith(b"\n") else reply
check("greedy chat == `lmforge chat --prompt` (same bytes)",
      out.returncode == 0 and reply == text.encode(), (out.returncode, reply, text.encode()))

# --- interactive `lmforge chat`: history, clear, exit, same answers as the API ---------------------


def greedy(messages):
    return client.chat.completions.create(model=args.model, messages=messages,
                                          temperature=0).choices[0].message.content


r1 = greedy([{"role": "user", "content": "hello"}])
r2 = greedy([{"role": "user", "content": "hello"}, {"role": "assistant", "content": r1},
             {"role": "user", "content": "hi there"}])
r3 = greedy([{"role": "user", "content": "hi there"}])
out = subprocess.run([args.lmforge, "chat", args.config], input=b"hello\nhi there\nclear\nhi there\n"
                     b"exit\nnever read\n", capture_output=True, timeout=120,
                     env=dict(os.environ, OMP_NUM_THREADS="1"))
want = (f"user: assistant: {r1}\nuser: assistant: {r2}\nuser: (history cleared)\n"
        f"user: assistant: {r3}\nuser: ").encode()
check("interactive chat keeps history (== API with the history), clear forgets it, exit ends",
      out.returncode == 0 and out.stdout == want and r2 != r3, (out.stdout, want, out.stderr))

# --- streamed chat through the SDK, with and without include_usage --------------------------------
chunks = list(client.chat.completions.create(model=args.model, messages=MSGS, temperature=0,
                                             stream=True, stream_options={"include_usage": True}))
body = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("streamed chat content == non-streamed content", body == text, (body, text))
check("include_usage: one last chunk with empty choices carries usage, other chunks none",
      chunks[-1].choices == [] and chunks[-1].usage is not None
      and chunks[-1].usage.completion_tokens == u.completion_tokens
      and all(c.usage is None for c in chunks[:-1]), chunks[-1])
check("streamed chunks: object chat.completion.chunk, first delta has role assistant",
      all(c.object == "chat.completion.chunk" for c in chunks)
      and chunks[0].choices[0].delta.role == "assistant")
fin = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check("stream: exactly one finish_reason", fin == [chat.choices[0].finish_reason], fin)
plain = list(client.chat.completions.create(model=args.model, messages=MSGS, temperature=0,
                                            stream=True))
check("without include_usage no chunk carries usage",
      all(c.usage is None and c.choices for c in plain))

# --- completions, n=2, stop strings, logprobs ------------------------------------------------------
comp = client.completions.create(model=args.model, prompt="The fox", max_tokens=12, temperature=0)
ctext = comp.choices[0].text
check("completions: text_completion with 12 tokens (length)",
      comp.object == "text_completion" and comp.usage.completion_tokens == 12
      and comp.choices[0].finish_reason == "length", comp)
st, _, tk = raw("POST", "/tokenize", {"prompt": "The fox"})
pids = json.loads(tk)["tokens"]
comp_ids = client.completions.create(model=args.model, prompt=pids, max_tokens=12, temperature=0)
check("completions: a token-id prompt gives the same text", comp_ids.choices[0].text == ctext)
st, _, dt = raw("POST", "/detokenize", {"tokens": pids})
check("/detokenize inverts /tokenize", st == 200 and json.loads(dt)["prompt"] == "The fox", dt)

scomp = "".join(c.choices[0].text for c in client.completions.create(
    model=args.model, prompt="The fox", max_tokens=12, temperature=0, stream=True) if c.choices)
check("streamed completions == non-streamed", scomp == ctext, (scomp, ctext))

two = client.chat.completions.create(model=args.model, messages=MSGS, n=2, temperature=1.0,
                                     seed=7, max_tokens=8)
check("n=2: two choices with index 0 and 1",
      sorted(c.index for c in two.choices) == [0, 1]
      and all(c.finish_reason for c in two.choices), two)
two_again = client.chat.completions.create(model=args.model, messages=MSGS, n=2, temperature=1.0,
                                           seed=7, max_tokens=8)
check("seeded sampling is reproducible",
      [c.message.content for c in two.choices] == [c.message.content for c in two_again.choices])
greedy2 = client.chat.completions.create(model=args.model, messages=MSGS, n=2, temperature=0)
check("n=2 greedy: both choices equal the single greedy answer",
      [c.message.content for c in greedy2.choices] == [text, text])

# a stop string taken from the middle of the greedy text, most likely spanning a token boundary
stop = None
for start in range(2, len(ctext) - 3):
    cand = ctext[start:start + 3]
    if cand.strip() and "\ufffd" not in cand:
        stop = cand
        break
if stop is None:
    check("greedy completion long enough to take a stop string from", False, ctext)
else:
    want = ctext[:ctext.find(stop)]
    s1 = client.completions.create(model=args.model, prompt="The fox", max_tokens=12,
                                   temperature=0, stop=[stop, "qqqq"])
    check(f"stop string {stop!r}: output cut before it, finish_reason stop",
          s1.choices[0].text == want and s1.choices[0].finish_reason == "stop",
          (s1.choices[0].text, want))
    s2 = "".join(c.choices[0].text for c in client.completions.create(
        model=args.model, prompt="The fox", max_tokens=12, temperature=0, stop=stop,
        stream=True) if c.choices)
    check("stop string while streaming: nothing of it is sent", s2 == want, (s2, want))

lp = client.chat.completions.create(model=args.model, messages=MSGS, temperature=0, logprobs=True,
                                    top_logprobs=2)
content = lp.choices[0].logprobs.content
check("chat logprobs: one entry per token with 2 alternatives, greedy token is the top one",
      len(content) > 0 and "".join(e.token for e in content) == lp.choices[0].message.content
      and all(len(e.top_logprobs) == 2 and e.logprob <= 0
              and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6 for e in content),
      lp.choices[0].logprobs)
clp = client.completions.create(model=args.model, prompt="The fox", max_tokens=5, temperature=0,
                                logprobs=3)
l = clp.choices[0].logprobs
check("completions logprobs: tokens join to the text, 3 alternatives, offsets ascend",
      "".join(l.tokens) == clp.choices[0].text and len(l.token_logprobs) == 5
      and all(len(t) >= 1 for t in l.top_logprobs)
      and l.text_offset == sorted(l.text_offset), l)

# --- 16 concurrent greedy requests get what they get alone ----------------------------------------
prompts = [f"The {w} fox number {i}" for i, w in enumerate(
    "red brown quick lazy small big old young".split() * 2)]
alone = [client.completions.create(model=args.model, prompt=p, max_tokens=10, temperature=0)
         .choices[0].text for p in prompts]
together = [None] * len(prompts)


def run(i):
    c = openai.OpenAI(base_url=f"http://{HOST}:{args.port}/v1", api_key=args.key, max_retries=0)
    together[i] = c.completions.create(model=args.model, prompt=prompts[i], max_tokens=10,
                                       temperature=0).choices[0].text


threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
for t in threads:
    t.start()
for t in threads:
    t.join()
check("16 concurrent greedy requests == each alone", together == alone,
      [(a, b) for a, b in zip(alone, together) if a != b])

# --- a raw SSE stream parsed by hand --------------------------------------------------------------
c = http.client.HTTPConnection(HOST, args.port, timeout=60)
c.request("POST", "/v1/chat/completions", body=json.dumps(
    {"model": args.model, "messages": MSGS, "temperature": 0, "stream": True,
     "stream_options": {"include_usage": True}}), headers=dict(AUTH, **{"Content-Type": "application/json"}))
r = c.getresponse()
raw_body = r.read().decode()
c.close()
events = raw_body.split("\n\n")
ok = r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream")
ok = ok and events[-1] == "" and events[-2] == "data: [DONE]"
datas = [json.loads(e[len("data: "):]) for e in events[:-2]] if ok else []
ok = ok and all(e.startswith("data: ") for e in events[:-1])
content = "".join(d["choices"][0]["delta"].get("content", "") for d in datas if d["choices"])
check("raw SSE: text/event-stream, data: lines, usage chunk, [DONE], same content",
      ok and content == text and datas[-1]["choices"] == [] and datas[-1]["usage"]
      ["total_tokens"] > 0, raw_body[:400])

# --- bad requests: status and OpenAI's error object -----------------------------------------------


def error_of(status, body, want_status, param=None, code=None):
    try:
        e = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (status == want_status and isinstance(e.get("message"), str) and e["message"]
            and "type" in e and "code" in e and "param" in e
            and (param is None or e["param"] == param) and (code is None or e["code"] == code))


U = {"model": args.model, "messages": MSGS}
bad = [
    ("malformed JSON -> 400", "POST", "/v1/chat/completions", '{"messages": [', {}, 400, None, None),
    ("messages not an array -> 400 naming messages", "POST", "/v1/chat/completions",
     {"model": args.model, "messages": "hi"}, {}, 400, "messages", None),
    ("temperature a string -> 400 naming temperature", "POST", "/v1/chat/completions",
     dict(U, temperature="hot"), {}, 400, "temperature", None),
    ("negative max_tokens -> 400 naming max_tokens", "POST", "/v1/chat/completions",
     dict(U, max_tokens=-3), {}, 400, "max_tokens", None),
    ("max_tokens past the context -> 400", "POST", "/v1/completions",
     {"prompt": "x", "max_tokens": 100000}, {}, 400, "max_tokens", None),
    ("n wrong type -> 400 naming n", "POST", "/v1/completions", {"prompt": "x", "n": "2"}, {}, 400,
     "n", None),
    ("prompt token outside the vocabulary -> 400", "POST", "/v1/completions",
     {"prompt": [1, 99999]}, {}, 400, "prompt[1]", None),
    ("unknown model -> 404 model_not_found", "POST", "/v1/chat/completions",
     dict(U, model="no-such-model"), {}, 404, "model", "model_not_found"),
    ("unknown path -> 404", "GET", "/v1/nothing", None, {}, 404, None, None),
    ("GET on a POST endpoint -> 405", "GET", "/v1/chat/completions", None, {}, 405, None, None),
    ("body over max_request_bytes -> 413", "POST", "/v1/completions",
     json.dumps({"prompt": "a" * (args.max_body + 10)}), {}, 413, None, None),
    ("missing Authorization -> 401", "POST", "/v1/chat/completions", U, {"Authorization": ""},
     401, None, None),
    ("wrong API key -> 401", "POST", "/v1/chat/completions", U,
     {"Authorization": "Bearer wrong"}, 401, None, "invalid_api_key"),
]
for name, method, path, body, hdr, want, param, code in bad:
    try:
        h = dict(hdr)
        if h.get("Authorization") == "":
            c = http.client.HTTPConnection(HOST, args.port, timeout=30)
            c.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            status, data, headers = r.status, r.read(), {}
            c.close()
        else:
            status, headers, data = raw(method, path, body, h)
        check(name, error_of(status, data, want, param, code), (status, data[:300]))
        if want == 405:
            check("405 carries Allow: POST", headers.get("allow") == "POST", headers)
    except Exception as ex:  # noqa: BLE001 - a crash here is a failed check
        check(name, False, repr(ex))
try:
    client.chat.completions.create(model="no-such-model", messages=MSGS)
    check("SDK: unknown model raises NotFoundError", False, "no error")
except openai.NotFoundError as ex:
    check("SDK: unknown model raises NotFoundError", ex.status_code == 404)
try:
    openai.OpenAI(base_url=f"http://{HOST}:{args.port}/v1", api_key="wrong", max_retries=0) \
        .models.list()
    check("SDK: wrong key raises AuthenticationError", False, "no error")
except openai.AuthenticationError:
    check("SDK: wrong key raises AuthenticationError", True)
# garbage that must never crash the server: broken HTTP, deep nesting, invalid UTF-8, NUL bytes
for junk in [b"GARBAGE\r\n\r\n", b"\x00\xff" * 64 + b"\r\n\r\n",
             b"POST /v1/completions HTTP/1.1\r\nContent-Length: -4\r\n\r\n",
             b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"pr"]:
    try:
        s = socket.create_connection((HOST, args.port), timeout=5)
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        s.recv(4096)
        s.close()
    except OSError:
        pass
for body in [b"[" * 60000, b'{"prompt": "\xff\xfe\xc3", "max_tokens": 3}',
             b'{"prompt": "a\x00b", "max_tokens": 3}', b'{"prompt": "\\ud800", "max_tokens": 3}',
             json.dumps({"messages": [{"role": "user", "content": "x"}] * 3}).encode()]:
    try:
        st = raw("POST", "/v1/completions" if b"prompt" in body or b"[[" in body[:2]
                 else "/v1/chat/completions", body)[0]
        check(f"odd body {body[:24]!r}... answered ({st})", st in (200, 400), st)
    except Exception as ex:  # noqa: BLE001
        check(f"odd body {body[:24]!r}... answered", False, repr(ex))
check("the server is still healthy after the bad requests", raw("GET", "/health")[0] == 200)

# --- a client that disconnects mid-stream cancels its request and frees its blocks ----------------


def open_stream(max_tokens, prompt="The fox"):
    s = socket.create_connection((HOST, args.port), timeout=30)
    body = json.dumps({"model": args.model, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "ignore_eos": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              args.key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def settle(timeout=15):
    """Waits until the engine is idle and every KV block is free; the last metrics."""
    end = time.time() + timeout
    while True:
        m = metrics()
        if (m["lmforge_requests_running"] == 0 and m["lmforge_requests_waiting"] == 0
                and m["lmforge_kv_blocks_used"] == 0) or time.time() > end:
            return m


before = settle()
s = open_stream(1000)
got = b""
while got.count(b"data: ") < 3:
    got += s.recv(4096)
s.close()
after = settle()
gen = after["lmforge_generation_tokens_total"] - before["lmforge_generation_tokens_total"]
check("disconnect mid-stream: request cancelled, blocks freed, generation stopped early",
      after["lmforge_kv_blocks_used"] == 0 and after["lmforge_requests_running"] == 0
      and after["lmforge_requests_cancelled_total"] > before["lmforge_requests_cancelled_total"]
      and gen < 1000, (gen, after))
check("metrics: TTFT and inter-token histograms observed, prefix cache counted",
      after['lmforge_time_to_first_token_seconds_count'] > 0
      and after['lmforge_inter_token_latency_seconds_count'] > 0
      and after["lmforge_prefix_cache_hits_total"] > 0
      and 0 < after["lmforge_prefix_cache_hit_rate"] <= 1
      and after["lmforge_kv_blocks_total"] > 0 and after["lmforge_prompt_tokens_total"] > 0)

# --- a full queue answers 429 with Retry-After ----------------------------------------------------
flood, statuses = [], []
for i in range(64):
    try:
        flood.append(open_stream(600, prompt=f"flood {i}"))
    except OSError:
        pass
for s in flood:
    s.settimeout(30)
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError:
        pass
    statuses.append(head)
n429 = [h for h in statuses if h.startswith(b"HTTP/1.1 429")]
n200 = [h for h in statuses if h.startswith(b"HTTP/1.1 200")]
check("flooded queue: some requests get 429 with Retry-After, the rest stream",
      n429 and n200 and len(n429) + len(n200) == len(statuses)
      and all(b"retry-after: " in h.lower() for h in n429), (len(n429), len(n200)))
for s in flood:
    s.close()
after = settle()
check("after the flood's clients left, every KV block is free",
      after["lmforge_kv_blocks_used"] == 0 and after["lmforge_requests_running"] == 0, after)

# --- SIGTERM under load: every completed response is whole ----------------------------------------
results, stop_load = [], threading.Event()


def load(i):
    while not stop_load.is_set():
        try:
            status, _, body = raw("POST", "/v1/chat/completions", dict(
                U, messages=[{"role": "user", "content": f"load {i}"}], temperature=0,
                max_tokens=24, stream=True), timeout=60)
        except (OSError, http.client.HTTPException) as ex:
            results.append(("error", repr(ex)))
            time.sleep(0.05)
            continue
        results.append((status, body))


threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
for t in threads:
    t.start()
time.sleep(1.0)
os.kill(args.pid, signal.SIGTERM)
time.sleep(1.5)
stop_load.set()
for t in threads:
    t.join()
whole = [b for s, b in results if s == 200]
broken = [b[-80:] for b in whole if not b.endswith(b"data: [DONE]\n\n")]
others = [r for r in results if r[0] not in (200, "error", 503)]
check("SIGTERM under load: every 200 response is a whole stream ending in [DONE]",
      len(whole) > 0 and not broken and not others, (len(whole), broken[:3], others[:3]))
sys.exit(1 if failures else 0)
