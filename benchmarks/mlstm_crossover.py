"""Where the quadratic mLSTM forms stop paying: `parallel` (the official formulation), `fused`, `factored` and
`chunkwise` at each chunk size, timed per sequence length on ViL-T's head shapes (4 heads of 96), forward only or
forward and backward, interleaved in rounds (median, min and max). `auto` (lstmvision.ops.mlstm.PARALLEL_MAX_LEN)
takes its crossover from this table.

    python benchmarks/mlstm_crossover.py --json benchmarks/results/cpu-mlstm-crossover.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from lstmvision.device import device_name, resolve_device, synchronize
from lstmvision.ops.mlstm import mlstm


def _inputs(batch: int, heads: int, seq: int, dim: int, device: torch.device, grad: bool):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq, dim, generator=g) for _ in range(3))
    i = torch.randn(batch, heads, seq, generator=g)
    f = torch.randn(batch, heads, seq, generator=g) + 3.0
    return [t.to(device).requires_grad_(grad) for t in (q, k, v, i, f)]


def _step(xs, backend: str, chunk: int, grad: bool):
    if grad:
        mlstm(*xs, backend=backend, chunk_size=chunk).sum().backward()
    else:
        with torch.no_grad():
            mlstm(*xs, backend=backend, chunk_size=chunk)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, nargs="+", default=[50, 197, 401, 785, 1569, 3137])
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    grad = args.mode == "train"
    rows = []
    for seq in args.seq:
        xs = _inputs(args.batch, args.heads, seq, args.dim, device, grad)
        cases = [("parallel", 64), ("fused", 64), ("factored", 64)] + [("chunkwise", c) for c in args.chunks]
        if seq > 1600:  # the quadratic forms need (S, S) matrices per head: skip where they cost gigabytes
            cases = [c for c in cases if c[0] == "chunkwise"]
        times: dict[str, list[float]] = {f"{b}/{c}": [] for b, c in cases}
        for b, c in cases:
            _step(xs, b, c, grad)  # warm-up
        for _ in range(args.rounds):
            for b, c in cases:
                synchronize(device)
                t0 = time.perf_counter()
                _step(xs, b, c, grad)
                synchronize(device)
                times[f"{b}/{c}"].append((time.perf_counter() - t0) * 1e3)
        row = {"seq": seq, **{k: dict(median_ms=round(statistics.median(v), 3), min_ms=round(min(v), 3),
                                       max_ms=round(max(v), 3)) for k, v in times.items()}}
        row["fastest"] = min(times, key=lambda k: statistics.median(times[k]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = dict(command="python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]), device=device_name(device),
                  torch=torch.__version__, threads=torch.get_num_threads(), mode=args.mode, batch=args.batch,
                  heads=args.heads, dim=args.dim, rows=rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
