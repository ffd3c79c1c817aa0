#!/usr/bin/env bash
# Set up (first time) and run the pipeline: ./run.sh [pipeline.py arguments]
# With no arguments: the embedded model decodes the shipped prompt shards on CPU into output/default.
set -euo pipefail
# Relative paths in the arguments (--config my.yaml, model.path=./m) stay the caller's: pipeline.py changes back
# to PIPELINE_CALLER_DIR before it reads them.
export PIPELINE_CALLER_DIR="${PIPELINE_CALLER_DIR:-$PWD}"
cd "$(dirname "$0")"
bash scripts/env.sh
exec .venv/bin/python pipeline.py "$@"
