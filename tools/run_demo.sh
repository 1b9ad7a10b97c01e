#!/usr/bin/env bash
# README command 1: the digits evidence study, short preset, end to end on CPU.
#
#   bash tools/run_demo.sh                 # sets up ./.venv, then runs the study
#   bash tools/run_demo.sh --preset full   # the longer preset behind the README table
#
# Takes the study's shipped dense DDPM teacher (checkpoints/digits/, scikit-learn's digits
# at 16x16, nothing downloaded; --train-teacher trains it again, 6000 iterations), prunes it
# (25 % of the channels, 56.7 % of the parameters kept) and finetunes the student for 1500
# iterations with DSM and with DSM+KD through tools/train.py (2 runs in parallel; add
# --arms dsm dsm_kd 2ndm for the 2ndM arm, ~4x slower on CPU), then scores every raw student
# and its EMA and writes work_dirs/digits_demo/{results.md, figure.png,
# grid_*_{raw,ema}.png, recovery.png, ftle.png}.
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
