#!/usr/bin/env bash
# Sets up .venv and runs the main job on the built-in default: a tiny char-level policy, warm-
# started on generated arithmetic, then trained with GRPO and InSight prompt selection.
# Usage: bash launch/local.sh [WORKDIR] [extra flags, e.g. --config.rl.steps=50]
# INSIGHT_CONFIG picks another config (default configs/arithmetic_tiny.py; the tests run
# INSIGHT_CONFIG=configs/arithmetic_tiny.py:smoke).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup_env.sh" requirements.txt
cd "$ROOT"
WORKDIR="${1:-workdirs/arithmetic_tiny}"
shift || true
CONFIG="${INSIGHT_CONFIG:-configs/arithmetic_tiny.py}"
exec .venv/bin/python -m insight_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
