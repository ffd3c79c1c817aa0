#!/usr/bin/env bash
# Train the reasoning model from scratch: one command, seeded, a budget in optimizer steps (so a busy
# machine changes the time, not the result); the model card (model/README.md) records what it produced.
#   OUT=/tmp/rs/model bash embedded/reasoning/train.sh      # then copy OUT to embedded/reasoning/model
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/env.sh >/dev/null
OUT=${OUT:-/tmp/rs/model}
THREADS=${THREADS:-2}
exec .venv/bin/python embedded/reasoning/train.py --out "$OUT" --steps 4000 --batch-size 64 --lr 2e-3 \
  --decay 0.3 --hidden 128 --layers 4 --heads 4 --eval-every 1000 --seed 0 --threads "$THREADS"
