#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the default test suite (slow tests excluded).
# Usage: bash launch/test.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup_env.sh" requirements-test.txt
cd "$ROOT"
exec .venv/bin/python -m pytest -q -n 2 "$@"
