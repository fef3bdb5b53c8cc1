"""`lstmvision memory`: peak memory and throughput of an inference forward pass vs input resolution.

Claims checked: LSTM token mixing (Sequencer) is economical in peak memory at high resolution; ViL scales
linearly in the number of tokens (chunkwise mLSTM above 256 tokens, `--mlstm-backend` forces one) while
attention (DeiT) grows quadratically.

Measurement (model in eval mode, `torch.no_grad()`, random input of `--batch-size` images):
- peak memory: on CUDA, `torch.cuda.max_memory_allocated()` during one forward minus the memory allocated
  before it (parameters and input excluded), as the official benchmark.py; on CPU, which has no allocator
  statistics, a `TorchDispatchMode` records every tensor storage created during the forward and releases it
  when the storage is freed, so the peak of live activation bytes is exact and deterministic (allocator
  overhead and the framework's own scratch buffers inside fused kernels are not counted);
- throughput: `--warmup` untimed forwards, then `--iters` timed forwards (CUDA-synchronised),
  images/s = batch * iters / elapsed. On a shared CPU the throughput is indicative only.
"""
from __future__ import annotations

import argparse
import time
import weakref
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lstmvision.analysis import common as C
from lstmvision.ops.dispatch import get_backend, use_backend

DEFAULT_MODELS = ["sequencer2d_s", "vil2_tiny", "timm:deit_small_patch16_224", "timm:convnext_tiny"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", nargs="+", default=[], metavar="SPEC",
                   help=f"names, timm:NAME or checkpoint folders (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH", help="trained model folders")
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 320, 448], help="input sizes in pixels")
    p.add_argument("--batch-size", "-b", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--no-throughput", action="store_true", help="measure peak memory only")
    p.add_argument("--in-chans", type=int, help="input channels for names / timm: specs")
    p.add_argument("--num-classes", type=int, help="classes for names / timm: specs")
    p.add_argument("--mlstm-backend", choices=["auto", "parallel", "chunkwise", "recurrent"],
                   help="mLSTM backend for ViL for this run (default: $LSTMVISION_MLSTM_BACKEND, else auto)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--output", "-o", required=True, help="output folder")


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the mode that are still alive; `.peak` is the max."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self.live -= n
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs that share an input's storage (views, in-place ops, views of parameters) allocate nothing
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n == 0 or key in self._seen or key in inputs:
                    continue
                self._seen.add(key)
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key, n)
        return out


@torch.no_grad()
def peak_forward_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes of activations during one forward of `model` on `x` (see the module doc for CPU vs CUDA)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        out = model(x)
        torch.cuda.synchronize(x.device)
        peak = torch.cuda.max_memory_allocated(x.device) - before
        del out
        return int(peak)
    with LiveTensorBytes() as m:
        out = model(x)
        del out
    return int(m.peak)


@torch.no_grad()
def throughput(model: nn.Module, x: torch.Tensor, warmup: int, iters: int) -> float:
    """Images/s of inference forwards (the timing of `lstmvision benchmark`, which offers more: repeats, kernels,
    precision, compile; use it for speed claims at one resolution)."""
    from lstmvision.benchmark import _sync

    def sync():
        _sync(x.device)

    for _ in range(warmup):
        model(x)
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        model(x)
    sync()
    return x.shape[0] * iters / (time.perf_counter() - t)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    specs = list(args.checkpoint) + list(args.model) or list(DEFAULT_MODELS)
    if any(s < 8 for s in args.sizes):
        raise ValueError(f"--sizes must be at least 8 px, got {args.sizes}")
    if args.batch_size < 1 or args.iters < 1 or args.warmup < 0:
        raise ValueError("--batch-size and --iters must be >= 1 and --warmup >= 0")
    with use_backend(mlstm=args.mlstm_backend):  # for this command only (it may run inside a longer process)
        return _run(args, specs)


def _run(args: argparse.Namespace, specs: list[str]) -> int:
    from tqdm import tqdm

    device = C.resolve_device(args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = []
    for spec in specs:
        model = C.load_model(spec, None, args.num_classes, args.in_chans).to(device)
        in_chans = C.model_in_chans(model)
        params = sum(p.numel() for p in model.parameters())
        rows = {}
        for s in tqdm(args.sizes, desc=model.label):
            x = torch.randn(args.batch_size, in_chans, s, s, device=device)
            try:
                mib = peak_forward_bytes(model, x) / 2**20
                ips = None if args.no_throughput else throughput(model, x, args.warmup, args.iters)
            except (RuntimeError, ValueError, AssertionError) as e:
                print(f"{model.label} @ {s}px: failed ({str(e).splitlines()[0][:120]})")
                mib = ips = None
            rows[str(s)] = dict(peak_mib=mib, images_per_s=ips)
        results.append(dict(model=model.label, params_m=params / 1e6, results=rows))
        del model
    report = dict(device=C.device_description(device), batch_size=args.batch_size, warmup=args.warmup,
                  iters=args.iters, mlstm_backend=get_backend().mlstm,
                  method="cuda max_memory_allocated" if device.type == "cuda" else "live tensor bytes (dispatch mode)",
                  seconds=round(time.time() - t0, 1), models=results)
    C.write_json(out / "memory.json", report)
    md = table(report)
    (out / "memory.md").write_text(md)
    plot(report, out / "memory.png")
    print(md)
    print(f"wrote {out / 'memory.json'}, memory.md, memory.png")
    return 0


def table(r: dict) -> str:
    sizes = sorted({int(s) for m in r["models"] for s in m["results"]})
    rows = []
    for m in r["models"]:
        cells = []
        for s in sizes:
            v = m["results"].get(str(s), {})
            mem = "n/a" if v.get("peak_mib") is None else f"{v['peak_mib']:.1f}"
            ips = "" if v.get("images_per_s") is None else f" / {v['images_per_s']:.1f}"
            cells.append(mem + ips)
        rows.append([m["model"], f"{m['params_m']:.2f}", *cells])
    return (f"Peak forward memory (MiB) / throughput (img/s), batch {r['batch_size']}, {r['method']}; "
            f"device: {r['device']}\n\n" + C.markdown_table(["model", "params (M)", *[f"{s}px" for s in sizes]], rows))


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_tp = any(v.get("images_per_s") for m in r["models"] for v in m["results"].values())
    fig, axes = plt.subplots(1, 2 if has_tp else 1, figsize=(10 if has_tp else 5.5, 4), squeeze=False)
    for m in r["models"]:
        pts = sorted((int(s), v) for s, v in m["results"].items() if v.get("peak_mib") is not None)
        if not pts:
            continue
        axes[0][0].plot([s for s, _ in pts], [v["peak_mib"] for _, v in pts], marker="o", label=m["model"])
        if has_tp:
            tp = [(s, v["images_per_s"]) for s, v in pts if v.get("images_per_s")]
            axes[0][1].plot([s for s, _ in tp], [v for _, v in tp], marker="o", label=m["model"])
    axes[0][0].set(xlabel="input size (px)", ylabel="peak forward memory (MiB)", title="Peak memory", yscale="log")
    if has_tp:
        axes[0][1].set(xlabel="input size (px)", ylabel="images / s", title="Throughput", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
