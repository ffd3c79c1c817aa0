#!/usr/bin/env bash
# Every GPU measurement in one go (bench/gpu_all.py): ./bench/gpu_all.sh [--dry-run | --smoke] [--parts ...]
# On a CUDA host after scripts/env.sh with a CUDA torch (docs/gpu.md). Results: bench/results/gpu_*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" -m bench.gpu_all "$@"
