#!/usr/bin/env bash
# Sets up .venv and runs the main job on the built-in default.
# Usage: bash launch/local.sh [WORKDIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup_env.sh" requirements.txt
cd "$ROOT"
WORKDIR="${1:-workdirs/selection_demo}"
exec .venv/bin/python -m insight_jax.selection.demo --out="$WORKDIR"
