#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment; safe to run again and again.
#
#   bash tools/setup_env.sh            # creates ./.venv with the tested stack
#
# Environment variables:
#   MMDIFF_VENV=PATH        where the environment lives (default: <repo>/.venv)
#   MMDIFF_KEEP_TORCH=1     keep the torch/torchvision already in the environment
#                           (users with their own CUDA build); otherwise torch 2.14.1
#   MMDIFF_WHEELHOUSE=PATH  where the mmcv wheel built from source is cached
#                           (default: ~/.cache/mmdiff-2ndm/wheels)
#   MMDIFF_BASE_PYTHON=python3.x  interpreter used to create the environment
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMDIFF_VENV:-$ROOT/.venv}"
BASE_PYTHON="${MMDIFF_BASE_PYTHON:-python3}"
WHEELHOUSE="${MMDIFF_WHEELHOUSE:-$HOME/.cache/mmdiff-2ndm/wheels}"
REQ="$ROOT/requirements"

log() { printf '[setup_env] %s\n' "$*" >&2; }

# Everything below is skipped when nothing it depends on changed since the last success.
stamp_of() {
  cat "$REQ"/*.txt "$ROOT/setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
  echo "${MMDIFF_KEEP_TORCH:-0}"
}
STAMP_FILE="$VENV/.mmdiff-2ndm-setup"
if [[ -f "$STAMP_FILE" ]] && [[ "$(cat "$STAMP_FILE")" == "$(stamp_of)" ]] \
    && "$VENV/bin/python" -c 'import mmdiff_2ndm' 2>/dev/null; then
  log "environment $VENV is up to date"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  "$BASE_PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# mmcv 2.1.0's setup.py imports pkg_resources (gone in setuptools 81).
pip_install "setuptools<81" wheel ninja

if [[ "${MMDIFF_KEEP_TORCH:-0}" == "1" ]]; then
  "$PY" -c 'import torch, torchvision' \
    || { log "MMDIFF_KEEP_TORCH=1 but torch/torchvision are not importable in $VENV"; exit 1; }
  log "keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing torch (requirements/torch.txt)"
  pip_install -r "$REQ/torch.txt"
fi

log "installing runtime and test requirements"
pip_install -c "$REQ/constraints.txt" -r "$REQ/runtime.txt" -r "$REQ/tests.txt"

# mmcv full (with compiled ops) has no wheel on PyPI for this torch: build it once per
# torch version and keep the wheel, so later environments install it in seconds.
build_mmcv_wheel() {
  local house=$1 src
  src="$(mktemp -d)"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    --no-build-isolation "mmcv==2.1.0" -d "$src"
  tar xzf "$src"/mmcv-2.1.0.tar.gz -C "$src"
  # mmcv 2.1.0 compiles with -std=c++17, but torch >= 2.10's headers refuse anything below
  # C++20 ("C++20 or later compatible compiler is required to use ATen").
  if grep -q 'C++20 or later' "$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include/ATen/ATen.h"))')"; then
    sed -i "s/'-std=c++1[47]'/'-std=c++20'/g" "$src/mmcv-2.1.0/setup.py"
  fi
  MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" "$PY" -m pip wheel --disable-pip-version-check -q \
    --no-deps --no-build-isolation "$src/mmcv-2.1.0" -w "$house"
  rm -rf "$src"
}
if ! "$PY" -c 'import mmcv, mmcv._ext; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  TORCH_VER="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
  HOUSE="$WHEELHOUSE/torch-$TORCH_VER"
  mkdir -p "$HOUSE"
  if ! ls "$HOUSE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "building mmcv 2.1.0 with ops from source (about 15 min on 2 cores) into $HOUSE"
    build_mmcv_wheel "$HOUSE"
  fi
  pip_install --no-deps "$HOUSE"/mmcv-2.1.0-*.whl
fi

log "installing the OpenMMLab stack and mmdiff-2ndm (editable)"
pip_install -c "$REQ/constraints.txt" -r "$REQ/mminstall.txt" -r "$REQ/runtime.txt" \
  -r "$REQ/tests.txt"
pip_install --no-deps -e "$ROOT"

"$PY" -m pip check
"$PY" -c 'import mmcv._ext, mmagic, mmdiff_2ndm; print("mmdiff_2ndm", mmdiff_2ndm.__version__)'
stamp_of > "$STAMP_FILE"
log "done: activate with 'source $VENV/bin/activate'"
