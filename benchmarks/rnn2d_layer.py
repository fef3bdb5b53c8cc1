"""Per-layer CPU/GPU timing of one BiLSTM2D mixer (RNN2DMixer): nn.LSTM modules vs the fused path.

    PYTHONPATH=src python benchmarks/rnn2d_layer.py --device cpu --batch-size 8 --repeats 5 \
        --json benchmarks/results/cpu-rnn2d-layer.json

Shapes are those of sequencer2d_s at 224: stage 1 (C=192, D=48, 32x32) and stages 2-4 (C=384, D=96, 16x16),
plus a non-square map. Each timing is the median of `--repeats` runs of `--iters` forward calls
(inference: eval + no_grad) or forward+backward calls (train); backends are interleaved run by run.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import torch

from lstmvision.device import time_steps
from lstmvision.layers import RNN2DMixer
from lstmvision.ops.dispatch import use_backend

SHAPES = [("stage1", 192, 48, 32, 32), ("stage2-4", 384, 96, 16, 16), ("non-square", 384, 96, 12, 20)]


def _make_fn(m, x, backend, mode):
    if mode == "infer":
        m.eval()

        def fn():
            with use_backend(rnn2d=backend), torch.no_grad():
                m(x)
    else:
        m.train()
        xg = x.clone().requires_grad_(True)

        def fn():
            with use_backend(rnn2d=backend):
                m(xg).sum().backward()
    return fn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--backends", nargs="+", default=["module", "fused"],
                   help="rnn2d backends: module (nn.LSTM: cuDNN/oneDNN), fused, triton, reference (math loop)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    rows = []
    for name, C, D, H, W in SHAPES:
        torch.manual_seed(0)
        m = RNN2DMixer(C, D).to(dev)
        x = torch.randn(args.batch_size, H, W, C, device=dev)
        row = dict(layer=name, C=C, D=D, H=H, W=W, batch=args.batch_size)
        fns = {}
        for be in args.backends:
            fns[be] = _make_fn(m, x, be, args.mode)
            fns[be]()  # warm-up
        # interleave the backends (A B A B ...) so that load from other processes hits both alike
        runs = {be: [] for be in args.backends}
        for _ in range(args.repeats):
            for be in args.backends:
                runs[be].append(time_steps(fns[be], args.iters, dev) / args.iters)
        for be in args.backends:
            row[f"{be}_ms"] = round(statistics.median(runs[be]) * 1e3, 2)
        if "module_ms" in row:
            for be in args.backends:
                if be != "module":
                    row[f"speedup_{be}_vs_module"] = round(row["module_ms"] / row[f"{be}_ms"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        out = dict(
            command="PYTHONPATH=src python " + " ".join(sys.argv),
            mode=args.mode, device=str(dev),
            machine=torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            torch=torch.__version__, rows=rows,
        )
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
