"""Run inside the router's node by test_router_multinode.sh: two `lmforge api` replicas on two
other netns-cluster nodes behind `lmforge router`. Checks that the router's reply equals a
replica's own, that concurrent requests use both nodes, and that a SIGKILL of the second node's
replica under streamed load leaves every request completed or ended by an error event after
chunks it had received, with the replica ejected and later requests completing.

usage: router_multinode_client.py --router HOST:PORT --replicas URL,URL --kill-pidfile F
"""
import argparse
import os
import re
import sys
import threading
import time
import urllib.request

import openai

ap = argparse.ArgumentParser()
ap.add_argument("--router", required=True)
ap.add_argument("--replicas", required=True)
ap.add_argument("--kill-pidfile", required=True)
ap.add_argument("--model", default="tiny-chat")
args = ap.parse_args()
reps = args.replicas.split(",")
failures = 0


def check(name, ok, detail=""):
    global failures
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)), flush=True)
    if not ok:
        failures += 1


def get(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=5) as r:
            return r.status, r.read().decode()
    except Exception as e:  # noqa: BLE001 - a failed probe is just "not yet"
        return 0, repr(e)


def finished(base):
    m = re.search(r"^lmforge_requests_finished_total (\d+)", get(base, "/metrics")[1], re.M)
    return int(m.group(1)) if m else -1


router = "http://" + args.router
end = time.time() + 90
while time.time() < end and '"healthy_replicas":2' not in get(router, "/health")[1]:
    time.sleep(0.2)
check("the router on node0 sees both replicas healthy", '"healthy_replicas":2' in
      get(router, "/health")[1], get(router, "/health"))


def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=120)


msgs = [{"role": "user", "content": "Tell me about the weather"}]
want = client(reps[0]).chat.completions.create(model=args.model, messages=msgs, max_tokens=16)
got = client(router).chat.completions.create(model=args.model, messages=msgs, max_tokens=16)
check("chat through the router == node1's replica directly",
      got.choices[0].message.content == want.choices[0].message.content)

before = [finished(r) for r in reps]
res = [None] * 6


def run(i, n_tokens, out, chunks=None, tag=""):
    try:
        n = 0
        for ch in client(router).completions.create(
                model=args.model, prompt=f"node test {tag}{i}", max_tokens=n_tokens, stream=True,
                extra_body={"ignore_eos": True}):
            n += 1
            if chunks is not None:
                chunks[i] = n
        out[i] = "ok"
    except Exception as e:  # noqa: BLE001
        out[i] = "error: " + repr(e)


ts = [threading.Thread(target=run, args=(i, 64, res)) for i in range(6)]
[t.start() for t in ts]
[t.join() for t in ts]
delta = [finished(r) - b for r, b in zip(reps, before)]
check("6 concurrent streams all complete, spread over both nodes",
      all(r == "ok" for r in res) and min(delta) >= 2 and sum(delta) == 6, (res, delta))

# kill -9 the replica on node2 while streams run on both
out, chunks = [None] * 8, [0] * 8
ts = [threading.Thread(target=run, args=(i, 300, out, chunks)) for i in range(8)]
[t.start() for t in ts]
t0 = time.time()
while sum(1 for c in chunks if c > 0) < 4 and time.time() - t0 < 60:
    time.sleep(0.01)
os.kill(int(open(args.kill_pidfile).read()), 9)
t_kill = time.time()
ejected = None
while time.time() - t_kill < 10:
    if re.search(r'lmforge_router_replica_healthy\{replica="%s"\} 0' % re.escape(reps[1]),
                 get(router, "/metrics")[1]):
        ejected = time.time() - t_kill
        break
    time.sleep(0.05)
[t.join(timeout=150) for t in ts]
check("no stream hangs", not any(t.is_alive() for t in ts))
bad = [(i, r, chunks[i]) for i, r in enumerate(out)
       if r != "ok" and not ("replica" in (r or "") and chunks[i] > 0)]
check("every stream completes or ends with the router's error event after its chunks", not bad,
      out)
check("the killed node's replica is ejected within the health interval", ejected is not None and
      ejected < 1.5, ejected)
after = [None] * 4
ts = [threading.Thread(target=run, args=(i, 32, after, None, "after ")) for i in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
check("requests after the kill complete on the surviving node", all(r == "ok" for r in after),
      after)
print(f"    multi-node kill -9: {sum(1 for r in out if r != 'ok')} of 8 streams ended with an "
      f"error event; ejected after {ejected} s", flush=True)
sys.exit(1 if failures else 0)
