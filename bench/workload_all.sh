#!/usr/bin/env bash
# Every figure of one embedded workload in one run, on quiet cores (nothing else running), from the repo root:
#   bash bench/workload_all.sh reasoning      (or longform; LIMIT=200 held-out prompts by default)
# 1. the TSPD controller from the model's own traces (the project's labels -> train-tspd commands);
# 2. bench/policies.py (every policy, trace-aware ones included), bench/cache.py, bench/rebatching.py and
#    bench/decode.py (exit policies and the first-step margins), each --workload WORKLOAD.
# Env: LIMIT (held-out prompts), THREADS (torch threads, 2), TSPD_INPUT (the controller's prompts), OUT,
#      BATCH (decode batch size, 16).
# Writes bench/results/{policies,decode,rebatching,cache}_WORKLOAD.json and embedded/WORKLOAD/controller/.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${1:?usage: bench/workload_all.sh longform|reasoning}
PY=${PY:-.venv/bin/python}
LIMIT=${LIMIT:-200}
BATCH=${BATCH:-16}
OUT=${OUT:-output/$WORKLOAD-tspd}
TSPD_INPUT=${TSPD_INPUT:-embedded/$WORKLOAD/tspd/prompts.jsonl}   # prompts whose traces train the controller
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
rm -rf "$OUT" "$OUT-labels.arrow"
$PY pipeline.py --config "configs/$WORKLOAD.yaml" input.url="$TSPD_INPUT" output.url="$OUT" \
  decode.policy=[none] decode.trace=tokens
$PY pipeline.py labels "$OUT" --out "$OUT-labels.arrow"
mkdir -p "embedded/$WORKLOAD/controller"
$PY pipeline.py train-tspd "$OUT-labels.arrow" --out "embedded/$WORKLOAD/controller/tspd.pt"
$PY bench/policies.py --threads "$THREADS" --workload "$WORKLOAD" --limit "$LIMIT" --batch-size "$BATCH"
$PY bench/cache.py --threads "$THREADS" --workload "$WORKLOAD" --limit "$((LIMIT < 96 ? LIMIT : 96))"
$PY bench/rebatching.py --threads "$THREADS" --workload "$WORKLOAD" --prompts "$LIMIT" --batch-size "$BATCH"
$PY bench/decode.py --threads "$THREADS" --workload "$WORKLOAD" --limit "$LIMIT" --batch-size "$BATCH"
