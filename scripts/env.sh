#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv): the pinned runtime and test dependencies
# (requirements.txt, requirements-test.txt), then the project itself in editable mode (pyproject.toml), so
# its packages and the `dllm-pipeline` command work from any folder. Offline: pins resolve through pip's
# configured local indexes. Idempotent: reinstalls only when one of the files below changed since the last
# successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=".venv/.requirements.sha256"
want=$(cat requirements.txt requirements-test.txt pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (one time, a few minutes) ..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  "${pip[@]}" -r requirements.txt -r requirements-test.txt
  "${pip[@]}" --no-deps -e .
  echo "$want" > "$stamp"
fi
