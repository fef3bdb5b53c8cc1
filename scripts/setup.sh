#!/usr/bin/env bash
# Set up a fresh machine: the Fashion-MNIST data package (Debian) and a virtual environment with lstmvision
# (and its test, export, docs, data and hf extras).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
        || echo "setup: could not install dataset-fashion-mnist; point --data or LSTMVISION_DATA at the idx files" >&2
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,export,docs,data,hf]"
echo "setup: done (.venv/bin/lstmvision)"
