#!/usr/bin/env bash
# Train the long-form embedded model from scratch on this checkout's layout (embedded/longform/tasks.py):
# one command, seeded, ~35 minutes on the 2 cores. The model card (model/README.md) records what this
# command produced. Stage 0 forms the copy on one short section; stage 1 is the full shape; the last 30 %
# of the budget is a cosine lr decay on the full shape.
#   OUT=/tmp/lf/model bash embedded/longform/train.sh      # then copy OUT to embedded/longform/model
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/env.sh >/dev/null
OUT=${OUT:-/tmp/lf/model}
MINUTES=${MINUTES:-35}
THREADS=${THREADS:-2}
SEED=${SEED:-80}
exec .venv/bin/python embedded/longform/train.py --out "$OUT" --minutes "$MINUTES" --decay 0.3 \
  --eval-every 250 --eval-n 24 --batch-tokens 6144 --lr 1e-3 --hidden 128 --layers 4 --heads 4 \
  --stages 2 --advance-at 0.85 --first-shape 1-1,1-1,20-30,0-0 --maskings uniform,blockwise \
  --threads "$THREADS" --seed "$SEED"
