#!/usr/bin/env bash
# Creates .venv (if missing), installs the pinned requirements into it, then the project itself
# (editable), so `insight_jax` and `configs` import from anywhere without sys.path edits.
# Usage: source launch/setup_env.sh [requirements-file]   (default: requirements.txt)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="${1:-requirements.txt}"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q --upgrade pip
fi
# pip skips what is already installed at the pinned version, so re-running is cheap.
"$ROOT/.venv/bin/pip" install -q -r "$ROOT/$REQ"
"$ROOT/.venv/bin/pip" install -q -e "$ROOT" --no-deps
