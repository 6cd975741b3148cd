#!/bin/sh
# Makes the test venv (.venv) over Debian's python3-torch and installs the pinned oracles
# (requirements-test.txt) with --no-deps, so pip never replaces Debian's torch.
set -eu
cd "$(dirname "$0")/.."
VENV=${LMF_VENV:-.venv}
STAMP="$VENV/.requirements-test.txt"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s requirements-test.txt "$STAMP"; then
    exit 0
fi
/usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r requirements-test.txt
"$VENV/bin/python" -c "import torch, transformers, peft, tokenizers, safetensors, openai"
cp requirements-test.txt "$STAMP"
echo "setup-venv: $VENV ready (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
