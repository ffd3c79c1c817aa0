#!/usr/bin/env bash
# Every long-form-workload figure in one run, on quiet cores (nothing else running), from the repo root:
#   bash bench/longform_all.sh            (LIMIT=200 held-out prompts by default; LIMIT=64 for a quicker run)
# 1. the TSPD controller from this model's own traces (the project's labels -> train-tspd commands);
# 2. bench/policies.py (every policy, trace-aware ones included), bench/cache.py, bench/rebatching.py and
#    bench/decode.py (exit policies and the first-step margins), each --workload longform.
# Env: LIMIT (held-out prompts), THREADS (torch threads, 2), TSPD_INPUT (the controller's prompts), OUT.
# Writes bench/results/{policies,decode,rebatching,cache}_longform.json and embedded/longform/controller/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LIMIT=${LIMIT:-200}
OUT=${OUT:-output/longform-tspd}
TSPD_INPUT=${TSPD_INPUT:-embedded/longform/tspd/prompts.jsonl}   # prompts whose traces train the controller
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
rm -rf "$OUT" "$OUT-labels.arrow"
$PY pipeline.py --config configs/longform.yaml input.url="$TSPD_INPUT" output.url="$OUT" \
  decode.policy=[none] decode.trace=tokens
$PY pipeline.py labels "$OUT" --out "$OUT-labels.arrow"
mkdir -p embedded/longform/controller
$PY pipeline.py train-tspd "$OUT-labels.arrow" --out embedded/longform/controller/tspd.pt
$PY bench/policies.py --threads "$THREADS" --workload longform --limit "$LIMIT" --batch-size 16
$PY bench/cache.py --threads "$THREADS" --workload longform --limit "$((LIMIT < 96 ? LIMIT : 96))"
$PY bench/rebatching.py --threads "$THREADS" --workload longform --prompts "$LIMIT" --batch-size 16
$PY bench/decode.py --threads "$THREADS" --workload longform --limit "$LIMIT" --batch-size 16
