#!/usr/bin/env bash
# Build llama.cpp's llama-server (continuous batching, --parallel slots) from the llama.cpp sources vendored in
# the pinned llama-cpp-python sdist (PyPI). The embedded generator uses it when found (trainer.llm_server.llama_server_binary:
# batched requests, about 3x llama-cpp-python's server on 2 cores). About 25 minutes on 2 cores.
#   bash scripts/build_llama_server.sh [OUT_DIR]   -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$HOME/.cache/domain-embed/llama-server}
LLAMA=$(grep -oE '^llama-cpp-python\[server\]==[0-9.]+' requirements.txt | sed 's/.*==//')
if [ ! -x "$OUT/build/bin/llama-server" ]; then
  mkdir -p "$OUT"
  .venv/bin/pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA" -d "$OUT"
  tar xzf "$OUT/llama_cpp_python-$LLAMA.tar.gz" -C "$OUT"
  SRC="$OUT/llama_cpp_python-$LLAMA/vendor/llama.cpp"
  cmake -S "$SRC" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
  cmake --build "$OUT/build" --target llama-server -j"$(nproc)" >/dev/null
fi
echo "$OUT/build/bin/llama-server"
