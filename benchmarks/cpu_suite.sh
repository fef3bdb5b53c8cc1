#!/usr/bin/env bash
# CPU suite (fp32 inference, batch 8, 224): ours (auto = module: nn.LSTM on oneDNN) and the official
# formulation (ref:) against timm's sequencer2d_s, plus the per-layer comparison fused vs module.
# Usage: bash benchmarks/cpu_suite.sh [ITERS] [REPEATS]   (from the repository root)
set -euo pipefail
ITERS=${1:-2}; REPEATS=${2:-5}
export PYTHONPATH=src
PY=${PYTHON:-python}
$PY -m lstmvision benchmark --model sequencer2d_s --compare timm:sequencer2d_s --compare ref:sequencer2d_s \
  --device cpu --precision fp32 --mode infer --batch-size 8 --img-size 224 --warmup 1 --iters "$ITERS" \
  --repeats "$REPEATS" --json benchmarks/results/cpu-sequencer2d_s-infer-fp32-bs8.json
$PY benchmarks/rnn2d_layer.py --device cpu --batch-size 8 --iters 2 --repeats 7 \
  --json benchmarks/results/cpu-rnn2d-layer-infer.json
