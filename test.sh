#!/usr/bin/env bash
# Set up (first time) and run the test suite: ./test.sh [pytest arguments]
# Default run: everything not marked slow (CPU only; starts one local Ray and a moto S3 server).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
set +e
.venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
