#!/usr/bin/env bash
# Small-scale reproduction of the Sequencer / ViL analysis claims on Fashion-MNIST (see the .py for details):
# four models trained by the engine (`lstmvision train --recipe sequencer-small` + per-mode overrides), then the
# analyses on their run folders.
#   scripts/reproduce_fashion_mnist.sh            full run (GPU recommended) -> results/fashion_mnist/full
#   scripts/reproduce_fashion_mnist.sh --quick    CI scale on CPU (~2 min)   -> results/fashion_mnist/quick
#   scripts/reproduce_fashion_mnist.sh --medium   CPU, ~10 min               -> results/fashion_mnist/medium
# Extra flags: --data PATH (default /usr/share/datasets/fashion-mnist), --out DIR, --device cpu|cuda, --workers N,
# --reuse (alias --reuse-checkpoints: keep finished runs in OUT/runs, resume unfinished ones).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
exec "$PY" scripts/reproduce_fashion_mnist.py "$@"
