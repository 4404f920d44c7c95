#!/usr/bin/env bash
# Set up (or refresh) ./.venv with shiftforge and everything its tests need.
# CPU-only PyTorch is pinned here so a fresh machine does not pull a multi-GB
# CUDA build; on a GPU machine install your CUDA torch first and skip the pin
# with SHIFTFORGE_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${SHIFTFORGE_TORCH:-}" != "skip" ]; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[models,test]"
.venv/bin/python -m pip install --quiet -e tests/extension_pkg  # the tiny third-party extension the tests use
echo "shiftforge is installed in $(pwd)/.venv" >&2
