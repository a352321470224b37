#!/usr/bin/env bash
# On a GPU machine (the CUDA image, or a venv with onnxruntime-gpu and TensorRT): build the GPU engines of every
# shipped model (ONNX Runtime CUDA, and TensorRT with its engine cache), check their parity against the CPU engine,
# time them, and write the figures into benchmarks/results/gpu_engines.json and BENCHMARKS.md ("GPU engines").
# No test needs this script; the tests run on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi); run this on a GPU machine" >&2
    exit 2
fi
nvidia-smi -L
"$PYTHON" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
PYTHONPATH=. "$PYTHON" benchmarks/gpu_engines.py --write-benchmarks "$@"
