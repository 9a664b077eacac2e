#!/usr/bin/env bash
# Creates .venv (if missing) and installs hf_birnn with its dev extras. torch is pinned to 2.13.0 here only:
# that CPU build is on local disk on our machines; pyproject keeps the range open for CUDA users elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,vectors]"
