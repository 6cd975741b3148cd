#!/bin/sh
# `lmforge router` and data-parallel replicas: router_client.py runs two `lmforge api` replicas
# of a tiny model behind two routers (least outstanding, prefix) and drives them with OpenAI's
# Python SDK: same greedy output as a replica, streaming, errors, policies, kill -9 of a replica
# under load (no request hangs or is lost before its first byte; ejection and re-admission).
# Then `lmforge api` with data_parallel_size: 2 serves end to end, restarts a replica killed
# with -9 and stops its replicas on SIGTERM; a router with its own api_key and no reachable
# replica answers 401 / 503 in OpenAI's error format; bad arguments are refused.
. "$(dirname "$0")/common.sh"
if ! "$LMF_PY" -c "import openai" 2>/dev/null; then
    echo "SKIP: OpenAI's Python SDK is not in the test venv at $LMF_PY (scripts/setup-venv.sh installs it)"
    exit 77
fi
cd "$WORK"
demo_model qwen2 5
cat > api.yaml <<YAML
model_name_or_path: model
template: chatml
max_new_tokens: 16
temperature: 0
max_num_seqs: 4
threads: 1
YAML
if "$LMF_PY" "$REF/router_client.py" --lmforge "$LMF" --config api.yaml --model tiny-chat \
    --key test-key --interval 0.5; then
    echo "PASS router client checks"
else
    echo "FAIL router client checks"
    fail=$((fail + 1))
fi

# data_parallel_size: 2 -> two replicas on PORT+1, PORT+2 and the router on PORT
PORT=$(free_port)
while ! { "$LMF_PY" -c "import socket,sys; [socket.socket().bind(('127.0.0.1', $PORT + i)) for i in (1, 2)]" 2>/dev/null; }; do PORT=$(free_port); done
API_PORT=$PORT API_MODEL_NAME=tiny-chat "$LMF" api api.yaml data_parallel_size=2 \
    router_health_interval=0.5 > dp.log 2>&1 &
PID=$!
cat > dp_check.py <<PY
import json, sys, time, urllib.request, openai
def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except Exception as e:
        return 0, repr(e).encode()
end = time.time() + 60
while time.time() < end and get($PORT, "/health")[0] != 200: time.sleep(0.1)
while time.time() < end and json.loads(get($PORT, "/health")[1]).get("healthy_replicas") != 2: time.sleep(0.1)
msgs = [{"role": "user", "content": "Tell me about the weather"}]
outs = []
for port in ($PORT, $PORT + 1, $PORT + 2):
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    outs.append(c.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=16).choices[0].message.content)
h = json.loads(get($PORT, "/health")[1])
print("health:", h, "replies equal:", outs[0] == outs[1] == outs[2])
sys.exit(0 if h["healthy_replicas"] == 2 and outs[0] == outs[1] == outs[2] else 1)
PY
check "data_parallel_size 2: router on API_PORT and both replicas answer the same greedy reply" "$LMF_PY" dp_check.py
# a replica killed with -9 is started again and re-admitted
cat > dp_restart.py <<PY
import json, sys, time, urllib.request
def healthy():
    try:
        with urllib.request.urlopen("http://127.0.0.1:$PORT/health", timeout=2) as r:
            return json.loads(r.read())["healthy_replicas"]
    except Exception:
        return -1
end = time.time() + 10
while time.time() < end and healthy() != 1: time.sleep(0.05)
dropped = healthy() == 1
end = time.time() + 90
while time.time() < end and healthy() != 2: time.sleep(0.1)
print("dropped to 1:", dropped, "back to 2:", healthy() == 2)
sys.exit(0 if dropped and healthy() == 2 else 1)
PY
CHILD=$(pgrep -P $PID | head -n 1)
if [ -n "$CHILD" ] && kill -9 "$CHILD"; then
    check "data_parallel_size 2: a replica killed with -9 is restarted and re-admitted" "$LMF_PY" dp_restart.py
else
    echo "FAIL data_parallel api has no replica child process"
    fail=$((fail + 1))
fi
kill -TERM $PID
rc=0
for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
    echo "FAIL data_parallel api still running 30 s after SIGTERM"
    kill -9 "$PID"
    fail=$((fail + 1))
else
    wait "$PID" || rc=$?
    if [ "$rc" -eq 0 ] && ! "$LMF_PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT + 1), 1)" 2>/dev/null &&
        ! "$LMF_PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT + 2), 1)" 2>/dev/null; then
        echo "PASS data_parallel api exits 0 on SIGTERM and its replicas are gone"
    else
        echo "FAIL data_parallel api exit status $rc, or a replica is still listening"
        cat dp.log
        fail=$((fail + 1))
    fi
fi
# the router's own key, and no replica to serve: 401 from the router, then 503 in OpenAI's format
RP=$(free_port)
API_KEY=router-key "$LMF" router --replicas http://127.0.0.1:1 --port "$RP" --health-interval 0.2 > rk.log 2>&1 &
RPID=$!
cat > rk_check.py <<PY
import json, sys, time, urllib.request, urllib.error
def call(path, key=None, body=None):
    h = {"Content-Type": "application/json"}
    if key: h["Authorization"] = "Bearer " + key
    req = urllib.request.Request(f"http://127.0.0.1:$RP{path}", data=body and json.dumps(body).encode(), headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers
    except OSError:
        return 0, {}, {}
end = time.time() + 20
while time.time() < end and call("/health")[0] == 0: time.sleep(0.1)
body = {"model": "m", "prompt": "x"}
h = call("/health"); a = call("/v1/completions", None, body); b = call("/v1/completions", "router-key", body)
print(h[:2], a[:2], b[:2], b[2].get("Retry-After"))
sys.exit(0 if h[0] == 503 and a[0] == 401 and a[1]["error"]["code"] == "invalid_api_key" and
         b[0] == 503 and b[1]["error"]["code"] == "no_healthy_replica" and b[2].get("Retry-After") == "1" else 1)
PY
check "router api_key: 401 without it; no healthy replica: /health 503 and 503 no_healthy_replica" "$LMF_PY" rk_check.py
kill -TERM $RPID
wait $RPID || { echo "FAIL router exit status $? after SIGTERM"; fail=$((fail + 1)); }
check_fails "router refuses a bad replica URL" "$LMF" router --replicas ftp://x:1
check_fails "router refuses a bad policy" "$LMF" router --replicas http://127.0.0.1:1 --policy random
check_fails "router refuses an unknown config key" "$LMF" router router_replica=http://127.0.0.1:1
finish
