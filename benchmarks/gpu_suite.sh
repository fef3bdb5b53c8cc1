#!/usr/bin/env bash
# GPU target suite of issue 5, one call on an H100/H200: `bash benchmarks/gpu_suite.sh` from the repository root.
# Writes benchmarks/results/gpu-*.json (device, versions and exact command inside each file).
set -euo pipefail
export PYTHONPATH=src
PY=${PYTHON:-python}
OUT=benchmarks/results
mkdir -p "$OUT"
# every backend on the real device against the math reference first (forward and gradients, fp32/bf16/fp16)
$PY -m lstmvision check-kernels --device cuda --json "$OUT/gpu-check-kernels.json" \
  || echo "check-kernels: some backend failed (see $OUT/gpu-check-kernels.json); its timings below are not valid"
# the Triton rnn2d kernels on the device (fp32 within 1e-5 of nn.LSTM)
$PY -m pytest -q tests/test_rnn2d.py
# mLSTM Triton kernels on the device (ViL head dims 96..512; CUDA-only tests included): fwd vs PyTorch chunkwise
$PY -m pytest -q tests/test_mlstm_triton.py tests/test_mlstm.py
for MODE in infer train; do
  for BS in 128 256; do
    # the opt-in Triton path: ratio vs timm's sequencer2d_s (target >= 3x) and vs our official formulation
    # (ref: = nn.LSTM modules, what auto runs), bf16, logits compared
    $PY -m lstmvision benchmark --model sequencer2d_s --kernels triton --compare timm:sequencer2d_s --compare ref:sequencer2d_s \
      --device cuda --precision bf16 --mode $MODE --batch-size $BS --img-size 224 --warmup 10 --iters 40 \
      --repeats 3 --json "$OUT/gpu-sequencer2d_s-$MODE-bf16-bs$BS.json"
  done
done
# per-layer: Triton vs fused PyTorch vs cuDNN nn.LSTM (module)
$PY benchmarks/rnn2d_layer.py --device cuda --batch-size 128 --iters 20 --repeats 5 \
  --backends module fused triton --json "$OUT/gpu-rnn2d-layer-infer.json"
$PY benchmarks/rnn2d_layer.py --device cuda --batch-size 128 --iters 20 --repeats 5 --mode train \
  --backends module fused triton --json "$OUT/gpu-rnn2d-layer-train.json"
# ViL targets (>= 2x the official formulation; ViL-T at 3136 tokens, batch 16):
for M in vil_tiny vil_small; do
  if $PY -c "import lstmvision,sys; sys.exit(0 if '$M' in lstmvision.list_models() else 1)"; then
    for MODE in infer train; do
      $PY -m lstmvision benchmark --model $M --compare ref:$M --device cuda --precision bf16 --mode $MODE \
        --batch-size 128 --warmup 10 --iters 40 --repeats 3 --no-macs --json "$OUT/gpu-$M-$MODE-bf16-bs128.json"
    done
  fi
done
# ViL v2: the Triton chunkwise mLSTM (opt-in: LSTMVISION_MLSTM_BACKEND=triton; auto stays with PyTorch) vs
# ref: (the PyTorch parallel formulation of auto at 196 tokens)
for M in vil2_tiny vil2_small; do
  for MODE in infer train; do
    LSTMVISION_MLSTM_BACKEND=triton $PY -m lstmvision benchmark --model $M --compare ref:$M --device cuda \
      --precision bf16 --mode $MODE --batch-size 128 --warmup 10 --iters 40 --repeats 3 --no-macs \
      --json "$OUT/gpu-$M-triton-$MODE-bf16-bs128.json"
  done
done
