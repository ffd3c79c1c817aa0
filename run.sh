#!/usr/bin/env bash
# Set up (first time) and run the pipeline: ./run.sh [pipeline.py arguments]
# With no arguments: the embedded model decodes the shipped prompt shards on CPU into output/default.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/env.sh
exec .venv/bin/python pipeline.py "$@"
