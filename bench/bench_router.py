"""Data-parallel serving bench: aggregate output tokens/s of `lmforge api` at C concurrent
streaming clients (default 16), for
  direct: one replica with all threads (--threads), clients connected to it directly;
  half:   one replica with half the threads, directly (what each of two replicas has);
  router: the all-threads replica behind `lmforge router` (the router's own cost);
  dp2:    `lmforge api` with data_parallel_size: 2 (two replicas, threads split, router).
Load client of our own (as bench_serve.py's): each client keeps one streaming /v1/completions
request in flight (prompt of token ids, max_tokens output, ignore_eos). Throughput counts the
streamed token chunks that arrive inside the measuring window (after a warm-up), so a window
shorter than one request still measures; latency is over the requests completed in it.
Usage: python bench/bench_router.py --lmforge build/lmforge --model DIR [--clients 16]
       [--seconds 30] [--warmup 5] [--max-tokens 32] [--prompt-len 32] [--threads 2]
       [--repeat N]: N interleaved rounds, then the median of each setup"""
import argparse, http.client, json, os, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--lmforge", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--seconds", type=float, default=30)
ap.add_argument("--warmup", type=float, default=5)
ap.add_argument("--max-tokens", type=int, default=32)
ap.add_argument("--prompt-len", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--setups", default="direct,half,router,dp2")
ap.add_argument("--repeat", type=int, default=1,
                help="rounds over the setups (interleaved, so load changes hit all of them)")
a = ap.parse_args()


def free_port(n=1):
    """A port p with p..p+n-1 free."""
    while True:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
        try:
            for k in range(1, n):
                t = socket.socket(); t.bind(("127.0.0.1", p + k)); t.close()
            return p
        except OSError:
            continue


def healthy(port, replicas=None):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/health")
        r = c.getresponse()
        body = r.read()
        return r.status == 200 and (replicas is None or
                                    json.loads(body).get("healthy_replicas") == replicas)
    except (OSError, ValueError):
        return False


def wait(port, replicas=None):
    for _ in range(1200):
        if healthy(port, replicas):
            return
        time.sleep(0.1)
    sys.exit(f"bench_router: port {port} did not become ready")


def one(port, i, k, win, counts, lock):
    prompt = [(7 * j + 13 * i + k) % 300 + 5 for j in range(a.prompt_len)]
    body = json.dumps({"model": "gpt-3.5-turbo", "prompt": prompt, "max_tokens": a.max_tokens,
                       "temperature": 0, "ignore_eos": True, "stream": True})
    t0 = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    for line in r:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        d = json.loads(line[6:])
        now = time.time()
        if d.get("choices") and d["choices"][0].get("finish_reason") is None and \
                win[0] <= now <= win[1]:
            with lock:
                counts[0] += 1
    c.close()
    return time.time() - t0


def load(port):
    t0 = time.time()
    win = (t0 + a.warmup, t0 + a.warmup + a.seconds)
    counts, lat, lock = [0], [], threading.Lock()

    def client(i):
        k = 0
        while time.time() < win[1]:
            d = one(port, i, k, win, counts, lock)
            k += 1
            if time.time() <= win[1]:
                with lock:
                    lat.append(d)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    return counts[0] / a.seconds, len(lat), pct(0.5), pct(0.99)


def config(extra):
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write(f"model_name_or_path: {a.model}\ntemperature: 0\nmax_num_seqs: 64\n"
            f"max_waiting_requests: 256\nenable_prefix_caching: false\n{extra}")
    f.close()
    return f.name


def run_setup(name):
    procs, files = [], []
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if name in ("direct", "half", "router"):
            t = max(1, a.threads // 2) if name == "half" else a.threads
            cfg = config(f"threads: {t}\n"); files.append(cfg)
            rp = free_port()
            procs.append(subprocess.Popen([a.lmforge, "api", cfg],
                                          env=dict(env, API_PORT=str(rp), OMP_NUM_THREADS=str(t)),
                                          **quiet))
            wait(rp)
            port = rp
            if name == "router":
                port = free_port()
                procs.append(subprocess.Popen([a.lmforge, "router", "--port", str(port),
                                               "--replicas", f"http://127.0.0.1:{rp}"], **quiet))
                wait(port, 1)
            what = f"1 replica x {t} thread(s), " + ("via the router" if name == "router" else
                                                    "direct")
        else:
            n = 2
            cfg = config(f"data_parallel_size: {n}\nthreads: {max(1, a.threads // n)}\n")
            files.append(cfg)
            port = free_port(n + 1)
            procs.append(subprocess.Popen([a.lmforge, "api", cfg],
                                          env=dict(env, API_PORT=str(port)), **quiet))
            wait(port, n)
            what = f"{n} replicas x {max(1, a.threads // n)} thread(s), via the router " \
                   "(data_parallel_size 2)"
        one(port, 0, 0, (0, 0), [0], threading.Lock())  # warm-up request
        load_before = os.getloadavg()[0]
        tok_s, n_req, p50, p99 = load(port)
        return what, tok_s, n_req, p50, p99, load_before
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=120)
        for f in files:
            os.unlink(f)


print(f"router bench: {a.model}, {a.clients} streaming clients, prompt {a.prompt_len} tokens, "
      f"{a.max_tokens} output tokens per request, {a.seconds:.0f} s window after "
      f"{a.warmup:.0f} s warm-up, {os.cpu_count()} cores", flush=True)
print(f"{'setup':62} {'out tok/s':>9} {'requests':>8} {'p50 s':>7} {'p99 s':>7} {'load':>5}",
      flush=True)
rows = []
for rnd in range(a.repeat):
    for s in a.setups.split(","):
        what, tok_s, n_req, p50, p99, ld = run_setup(s)
        rows.append({"setup": s, "what": what, "round": rnd, "output_tok_s": tok_s,
                     "requests": n_req, "p50_latency_s": p50, "p99_latency_s": p99,
                     "loadavg_before": ld})
        print(f"{what:62} {tok_s:>9.1f} {n_req:>8} {p50:>7.2f} {p99:>7.2f} {ld:>5.1f}", flush=True)
if a.repeat > 1:
    print(f"median of {a.repeat} rounds:")
    for s in a.setups.split(","):
        v = sorted(r["output_tok_s"] for r in rows if r["setup"] == s)
        what = next(r["what"] for r in rows if r["setup"] == s)
        print(f"{what:62} {v[len(v) // 2]:>9.1f}  (runs: {', '.join(f'{x:.1f}' for x in v)})")
print(json.dumps(rows))
