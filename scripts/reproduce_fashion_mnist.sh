#!/usr/bin/env bash
# Fashion-MNIST reproduction of the Sequencer / ViL claims on a CPU (see the .py for details): six compared models,
# the Sequencer ablation table (2 seeds) and the ViL ablations, all trained on the 60,000 training images at 28 px
# by the engine (`lstmvision train --recipe sequencer-small` + the stated overrides), the analyses on the compared
# models, summary.md / summary.json with every claim as holds / does not hold.
#   scripts/reproduce_fashion_mnist.sh [--reuse]   full run (about 3 h on 2 CPU cores) -> results/fashion_mnist/full
#   scripts/reproduce_fashion_mnist.sh --quick     CI scale (about 2 min)                -> results/fashion_mnist/quick
# --reuse (alias --reuse-checkpoints): skip every finished training in OUT/runs, resume an unfinished one; the
# analyses and the summary are redone. Extra flags: --data PATH (default /usr/share/datasets/fashion-mnist),
# --out DIR, --device cpu|cuda, --workers N, --threads N (default: the cores other jobs leave free), --skip-ablations.
# Python: $PYTHON, else the project's .venv, else `python`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
exec "$PY" scripts/reproduce_fashion_mnist.py "$@"
