#!/bin/sh
# `lmforge api` against OpenAI's official Python SDK and raw HTTP (api_openai_client.py): chat,
# streamed chat with include_usage, completions, n=2, stop strings, logprobs, models, tokenize;
# greedy output == `lmforge chat --prompt`; 16 concurrent greedy requests == each alone; bad
# requests get the right status and OpenAI's error object; an SSE stream parsed by hand; a client
# that disconnects mid-stream frees its blocks; a full queue answers 429; SIGTERM under load loses
# no completed response and exits 0. The model is a tiny random one on a tokenizer trained here.
. "$(dirname "$0")/common.sh"
if ! "$LMF_PY" -c "import openai" 2>/dev/null; then
    echo "SKIP: OpenAI's Python SDK is not in the test venv at $LMF_PY (scripts/setup-venv.sh installs it)"
    exit 77
fi
cd "$WORK"
demo_model qwen2 5
MAX_BODY=65536
cat > api.yaml <<YAML
model_name_or_path: model
template: chatml
infer_backend: huggingface
max_new_tokens: 16
temperature: 0
max_num_seqs: 16
max_waiting_requests: 24
max_request_bytes: $MAX_BODY
threads: 1
YAML
PORT=$(free_port)
API_PORT=$PORT API_KEY=test-key API_MODEL_NAME=tiny-chat "$LMF" api api.yaml > api.log 2>&1 &
PID=$!
if "$LMF_PY" "$REF/api_openai_client.py" --port "$PORT" --key test-key --model tiny-chat \
    --lmforge "$LMF" --config api.yaml --pid "$PID" --max-new-tokens 16 --max-body "$MAX_BODY"; then
    echo "PASS api client checks"
else
    echo "FAIL api client checks (server log follows)"
    cat api.log
    fail=$((fail + 1))
fi
# The client sent SIGTERM last: the server must exit on its own, with status 0.
rc=0
for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
    echo "FAIL server still running 30 s after SIGTERM"
    kill -9 "$PID"
    fail=$((fail + 1))
else
    wait "$PID" || rc=$?
    if [ "$rc" -eq 0 ] && grep -q "KV cache: .* blocks x 16 tokens = .* tokens" api.log; then
        echo "PASS server exits 0 after SIGTERM; printed the KV pool at start"
    else
        echo "FAIL server exit status $rc after SIGTERM"
        cat api.log
        fail=$((fail + 1))
    fi
fi
check_fails "api refuses an unknown config key" "$LMF" api api.yaml max_num_seq=4
check_fails "api refuses a bad API_PORT" env API_PORT=99999 "$LMF" api api.yaml
finish
