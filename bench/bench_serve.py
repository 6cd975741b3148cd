"""Concurrency bench of `lmforge api`: a bounded load client of our own over loopback (no
external load tools). For each concurrency level C, C client threads each keep one streaming
/v1/completions request in flight (fixed prompt of token ids, max_tokens output, ignore_eos).
A window of --seconds is measured after at least --warmup seconds of load and one finished
request per client (the first round arrives at once; the window should see the steady state):
aggregate output tokens/s is the rise of the server's lmforge_generation_tokens_total counter
(GET /metrics) over the window, so requests in flight when it opens or closes count for the
tokens they get inside it (with 32 clients one round can take longer than a short window);
p50/p99 request latency and time to first token are over the requests that both started and
finished inside the window.
Usage: python bench/bench_serve.py --lmforge build/lmforge --model DIR [--levels 1,8,16,32]
       [--seconds 15] [--warmup 3] [--max-tokens 32] [--prompt-len 32] [--threads 2]
       [--infer-dtype float32] [--tp 1] [--repeat 1]
--repeat N runs the levels N times in turn (1, 8, 16, 32, 1, 8, ...) and then prints the median of
each level: the one-client figure is bound by memory bandwidth, which moves by up to 1.5x over
minutes on a shared VM, while the many-client ones are bound by multiply-adds, so a ratio of
two single windows minutes apart can swing either way.
--tp N serves with tensor_parallel_size N (N ranks under mpirun, --threads threads each).
Do not run it under chrt: the server would inherit the real-time class, and its spinning compute
threads would then hold a core for whole round-robin slices while the HTTP threads wait."""
import argparse, http.client, json, os, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--lmforge", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--levels", default="1,8,16,32")
ap.add_argument("--seconds", type=float, default=15)
ap.add_argument("--warmup", type=float, default=3)
ap.add_argument("--max-tokens", type=int, default=32)
ap.add_argument("--prompt-len", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--infer-dtype", default="float32")
ap.add_argument("--tp", type=int, default=1)
ap.add_argument("--repeat", type=int, default=1)
a = ap.parse_args()

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
cfg.write(f"model_name_or_path: {a.model}\nthreads: {a.threads}\ntemperature: 0\n"
          f"max_num_seqs: 64\nmax_waiting_requests: 256\ninfer_dtype: {a.infer_dtype}\n"
          f"enable_prefix_caching: false\ntensor_parallel_size: {a.tp}\n")
cfg.close()
env = dict(os.environ, API_PORT=str(port), OMP_NUM_THREADS=str(a.threads),
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
srv = subprocess.Popen([a.lmforge, "api", cfg.name], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def ready():
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/health")
        return c.getresponse().status == 200
    except OSError:
        return False


try:
    for _ in range(600):
        if ready():
            break
        time.sleep(0.1)
    else:
        sys.exit("bench_serve: the server did not become ready")

    def generated():
        """The server's count of generated tokens."""
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith("lmforge_generation_tokens_total "):
                c.close()
                return float(line.split()[1])
        sys.exit("bench_serve: /metrics has no lmforge_generation_tokens_total")

    def one(i, k):
        """One streamed request; returns (output tokens, latency s, ttft s)."""
        prompt = [(7 * j + 13 * i + k) % 300 + 5 for j in range(a.prompt_len)]
        body = json.dumps({"model": "gpt-3.5-turbo", "prompt": prompt, "max_tokens": a.max_tokens,
                           "temperature": 0, "ignore_eos": True, "stream": True,
                           "stream_options": {"include_usage": True}})
        t0 = time.time()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        ttft, n = None, 0
        for line in r:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            # Only the chunks it needs are parsed (until the first token, and the usage one):
            # the client shares the cores with the server, and parsing every chunk cost 5.6 %
            # of a core at 32 clients.
            if ttft is not None and b'"usage":{' not in line:
                continue
            d = json.loads(line[6:])
            if d.get("choices") and ttft is None:
                ttft = time.time() - t0
            if d.get("usage"):
                n = d["usage"]["completion_tokens"]
        c.close()
        return n, time.time() - t0, ttft or 0.0

    def level(C):
        res, lock = [], threading.Lock()
        state = {"open": None, "close": None, "finished": 0}

        def client(i):
            k = 0
            while state["close"] is None or time.time() < state["close"]:
                t0 = time.time()
                out = one(i, k)
                k += 1
                with lock:
                    state["finished"] += 1
                    if state["open"] and t0 >= state["open"] and time.time() <= state["close"]:
                        res.append(out)

        ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(C)]
        t_start = time.time()
        [t.start() for t in ts]
        # Warm-up: at least --warmup seconds and one finished request per client (the first
        # round of requests arrives at once), so the window sees the steady state.
        while time.time() - t_start < a.warmup or (state["finished"] < C and
                                                     time.time() - t_start < 300):
            time.sleep(0.05)
        g0, w0 = generated(), time.time()
        state["open"], state["close"] = w0, w0 + a.seconds
        time.sleep(a.seconds)
        g1, w1 = generated(), time.time()
        [t.join() for t in ts]  # the requests in flight at the close run to their end
        lat = sorted(r[1] for r in res) or [float("nan")]
        ttft = sorted(r[2] for r in res) or [float("nan")]
        pct = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]
        return {"clients": C, "requests": len(res), "output_tok_s": (g1 - g0) / (w1 - w0),
                "p50_latency_s": pct(lat, 0.5), "p99_latency_s": pct(lat, 0.99),
                "p50_ttft_s": pct(ttft, 0.5), "p99_ttft_s": pct(ttft, 0.99)}

    one(0, 0)  # warm-up
    rows = []
    print(f"serve bench: {a.model}, TP {a.tp} x {a.threads} threads, {a.infer_dtype}, prompt {a.prompt_len} "
          f"tokens, {a.max_tokens} output tokens per request, {a.seconds:.0f} s window per level "
          f"after >= {a.warmup:.0f} s of load; load average {os.getloadavg()[0]:.2f}")
    print(f"{'clients':>7} {'requests':>8} {'out tok/s':>10} {'x 1 client':>10} {'p50 lat s':>9} "
          f"{'p99 lat s':>9} {'p50 ttft s':>10} {'p99 ttft s':>10}")
    levels = [int(x) for x in a.levels.split(",")]
    for rnd in range(a.repeat):
        for C in levels:
            r = level(C)
            r["round"] = rnd + 1
            rows.append(r)
            first = rows[rnd * len(levels)]["output_tok_s"]
            print(f"{C:>7} {r['requests']:>8} {r['output_tok_s']:>10.1f} "
                  f"{r['output_tok_s'] / first:>10.2f} {r['p50_latency_s']:>9.2f} "
                  f"{r['p99_latency_s']:>9.2f} {r['p50_ttft_s']:>10.2f} {r['p99_ttft_s']:>10.2f}",
                  flush=True)
    if a.repeat > 1:
        med = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
        m = {C: med([r["output_tok_s"] for r in rows if r["clients"] == C]) for C in levels}
        print(f"median of {a.repeat} rounds: " + ", ".join(
            f"{C} clients {m[C]:.1f} tok/s ({m[C] / m[levels[0]]:.2f}x)" for C in levels))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps(rows))
finally:
    srv.terminate()
    srv.wait(timeout=90)  # a tensor-parallel launcher drains, then stops its ranks
    srv.wait(timeout=60)
    os.unlink(cfg.name)
