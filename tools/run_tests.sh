#!/usr/bin/env bash
# Sets up the environment (idempotent, see tools/setup_env.sh) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/test_utils -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${MMDIFF_VENV:-$ROOT/.venv}/bin/python" -m pytest "${@:-tests}"
