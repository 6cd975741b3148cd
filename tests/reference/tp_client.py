"""Greedy answers of a running `lmforge api` for tensor-parallel equality tests
(test_api_tp.sh, test_api_tp_multinode.sh): the same requests, one at a time and then all at
once (concurrent requests share steps: prefill chunks of some beside decodes of others), with
their tokens and top-5 log-probabilities. --save writes them as JSON; --against compares them
with a saved file (of a tensor_parallel_size 1 server): every answer's tokens identical and
every log-probability (chosen and top 5) within --tol. Exits non-zero on any difference.

usage: tp_client.py --host H --port P (--save FILE | --against FILE) [--tol 1e-4]
"""
import argparse
import http.client
import json
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--save")
ap.add_argument("--against")
ap.add_argument("--tol", type=float, default=1e-4)
ap.add_argument("--wait", type=float, default=120, help="seconds to wait for /health")
args = ap.parse_args()

WORDS = ("the quick brown fox jumps over the lazy dog while a small model counts tokens and "
         "every rank of the group holds one part of each matrix").split()
PROMPTS = [
    "hello world",
    "once upon a time",
    " ".join(WORDS),  # long enough to be prefilled in several chunks
    " ".join(WORDS[:9]),
    "a",
    " ".join(reversed(WORDS)),
]


def request(path, body, timeout=120):
    c = http.client.HTTPConnection(args.host, args.port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}: {data[:300]!r}")
    return json.loads(data)


def completion(prompt, max_tokens):
    j = request("/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                     "logprobs": 5, "ignore_eos": True})
    lp = j["choices"][0]["logprobs"]
    return {"text": j["choices"][0]["text"], "tokens": lp["tokens"],
            "logprobs": lp["token_logprobs"], "top": lp["top_logprobs"]}


def chat(text):
    j = request("/v1/chat/completions",
                {"messages": [{"role": "user", "content": text}], "max_tokens": 12,
                 "temperature": 0, "logprobs": True, "top_logprobs": 5})
    content = j["choices"][0]["logprobs"]["content"]
    return {"text": j["choices"][0]["message"]["content"],
            "tokens": [e["token"] for e in content], "logprobs": [e["logprob"] for e in content],
            "top": [{a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in content]}


def wait_healthy():
    end = time.time() + args.wait
    while time.time() < end:
        try:
            c = http.client.HTTPConnection(args.host, args.port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def answers():
    out = {}
    for i, p in enumerate(PROMPTS):
        out[f"alone {i}"] = completion(p, 24)
    out["chat"] = chat("what does a rank hold?")
    # all at once, started a little apart so that prefills land beside decodes
    got, errors = {}, []

    def one(i):
        try:
            time.sleep(0.03 * i)
            got[f"together {i}"] = completion(PROMPTS[i % len(PROMPTS)], 24 - i)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    out.update(got)
    return out


def compare(mine, ref):
    bad, worst = [], 0.0
    for key in sorted(ref):
        a, b = mine.get(key), ref[key]
        if a is None or a["tokens"] != b["tokens"]:
            bad.append(f"{key}: tokens {None if a is None else a['tokens']} != {b['tokens']}")
            continue
        for x, y in zip(a["logprobs"], b["logprobs"]):
            worst = max(worst, abs(x - y))
        for ta, tb in zip(a["top"], b["top"]):
            for tok, v in tb.items():
                if tok in ta:
                    worst = max(worst, abs(ta[tok] - v))
                elif min(tb.values()) < v - args.tol:  # only a tie at the cut-off may swap
                    bad.append(f"{key}: top token {tok!r} missing")
    return bad, worst


if not wait_healthy():
    sys.exit(f"FAIL: {args.host}:{args.port} not healthy within {args.wait} s")
res = answers()
if args.save:
    with open(args.save, "w") as f:
        json.dump(res, f)
    n = sum(len(v["tokens"]) for v in res.values())
    print(f"saved {len(res)} answers ({n} tokens) from {args.host}:{args.port}")
if args.against:
    with open(args.against) as f:
        ref = json.load(f)
    bad, worst = compare(res, ref)
    n = sum(len(v["tokens"]) for v in ref.values())
    for b in bad:
        print("  " + b)
    print(f"{len(ref)} answers, {n} tokens: {len(bad)} differ; log-probabilities max |diff| "
          f"{worst:.2e} (tolerance {args.tol:g})")
    sys.exit(1 if bad or worst > args.tol else 0)
