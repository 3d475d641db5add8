#!/usr/bin/env bash
# Set up a virtual environment with the pinned stack: `bash scripts/setup.sh` (then `. .venv/bin/activate`).
# torch is installed first and pinned, so pip never pulls a multi-GB CUDA build where a CPU one is meant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/pip install -q "$(grep -E '^torch==' requirements.txt)"
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/pip install -q --no-deps -e .
.venv/bin/pip check
echo "ready: . .venv/bin/activate"
