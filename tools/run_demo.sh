#!/usr/bin/env bash
# README command 1: the digits evidence study, short preset, end to end on CPU.
#
#   bash tools/run_demo.sh                 # sets up ./.venv, then runs the study
#   bash tools/run_demo.sh --preset full   # the longer preset behind the README table
#
# Trains a dense DDPM teacher on scikit-learn's digits (16x16, nothing downloaded),
# prunes it (25 % of the channels, 56 % of the parameters kept) and finetunes the student
# with DSM, DSM+KD and DSM+KD+2ndM through tools/train.py (2 runs in parallel), then scores
# every raw student and its EMA and writes
# work_dirs/digits_demo/{results.md, grid_*_{raw,ema}.png, recovery.png, ftle.png}.
# Environment variables: MMDIFF_VENV (see tools/setup_env.sh), DEMO_WORK_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMDIFF_VENV:-$ROOT/.venv}"
WORK_DIR="${DEMO_WORK_DIR:-work_dirs/digits_demo}"

bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
"$VENV/bin/python" tools/digits_study.py --preset short --work-dir "$WORK_DIR" --jobs 2 "$@"
echo "Results: $WORK_DIR/results.md; sample grids: $WORK_DIR/grid_*.png;" \
     "plots: $WORK_DIR/recovery.png, $WORK_DIR/ftle.png"
