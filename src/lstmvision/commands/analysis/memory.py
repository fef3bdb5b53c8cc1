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
- throughput: after every model's memory, `--repeats` rounds; each round times every model at every size in turn
  (interleaved, so that a change in machine load hits all models alike): `--warmup` untimed forwards, then
  `--iters` timed forwards (CUDA-synchronised), images/s = batch * iters / elapsed. Reported: the median over the
  rounds with min and max. On a shared CPU measure with nothing else running.
"""
from __future__ import annotations

import statistics
import time
import weakref
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from tqdm import tqdm

from lstmvision.commands.analysis import common as C
from lstmvision.device import resolve_device, time_steps
from lstmvision.ops.dispatch import get_backend


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
    return x.shape[0] * iters / time_steps(lambda: model(x), iters, x.device, warmup)


def memory_report(models: Iterable[nn.Module], sizes: list[int], output: str | Path, batch_size: int = 1,
                  warmup: int = 2, iters: int = 5, measure_throughput: bool = True,
                  device: torch.device | None = None, repeats: int = 3, overwrite: bool = False,
                  reads: Sequence[str | Path] = ()) -> dict:
    """Peak forward memory (and throughput) of each model (with `.label`, from `models.loading.create_model`) at each input
    size; writes memory.json, .md and .png to `output` and returns the report. Every model stays loaded until the
    end, because the throughput rounds interleave them."""

    if any(s < 8 for s in sizes):
        raise ValueError(f"--sizes must be at least 8 px, got {sizes}")
    if batch_size < 1 or iters < 1 or warmup < 0 or repeats < 1:
        raise ValueError("--batch-size, --iters and --repeats must be >= 1 and --warmup >= 0")
    device = device or resolve_device(None)
    out = C.report_folder(output, "memory", overwrite, reads)
    t0 = time.time()
    measured = []  # (model, in_chans, its result entry)
    for model in models:
        model.to(device)
        in_chans = C.model_in_chans(model)
        rows = {}
        for s in tqdm(sizes, desc=f"{model.label} memory"):
            try:
                mib = peak_forward_bytes(model, torch.randn(batch_size, in_chans, s, s, device=device)) / 2**20
            except (RuntimeError, ValueError, AssertionError) as e:
                print(f"{model.label} @ {s}px: failed ({str(e).splitlines()[0][:120]})")
                mib = None
            rows[str(s)] = dict(peak_mib=mib, images_per_s=None)
        entry = dict(model=model.label, params_m=sum(p.numel() for p in model.parameters()) / 1e6, results=rows)
        measured.append((model, in_chans, entry))
    if measure_throughput:
        interleaved_throughput(measured, batch_size, warmup, iters, repeats, device)
    report = dict(device=C.device_description(device), batch_size=batch_size, warmup=warmup,
                  iters=iters, repeats=repeats if measure_throughput else None, mlstm_backend=get_backend().mlstm,
                  method="cuda max_memory_allocated" if device.type == "cuda" else "live tensor bytes (dispatch mode)",
                  seconds=round(time.time() - t0, 1), models=[e for _, _, e in measured])
    C.write_report(out, "memory", report, table(report), plot)
    return report


def interleaved_throughput(measured: list, batch_size: int, warmup: int, iters: int, repeats: int,
                           device: torch.device) -> None:
    """Fills images_per_s (median over `repeats` rounds) and its min / max into each entry's results; every round
    measures every model at every size whose memory pass succeeded."""

    samples: dict[tuple[int, str], list[float]] = {}
    for _ in tqdm(range(repeats), desc="throughput rounds"):
        for i, (model, in_chans, entry) in enumerate(measured):
            for s, row in entry["results"].items():
                if row["peak_mib"] is not None:
                    x = torch.randn(batch_size, in_chans, int(s), int(s), device=device)
                    samples.setdefault((i, s), []).append(throughput(model, x, warmup, iters))
    for (i, s), v in samples.items():
        measured[i][2]["results"][s].update(images_per_s=statistics.median(v), images_per_s_min=min(v),
                                            images_per_s_max=max(v))


def table(r: dict) -> str:
    sizes = sorted({int(s) for m in r["models"] for s in m["results"]})
    rows = []
    for m in r["models"]:
        cells = []
        for s in sizes:
            v = m["results"].get(str(s), {})
            mem = "n/a" if v.get("peak_mib") is None else f"{v['peak_mib']:.1f}"
            ips = "" if v.get("images_per_s") is None else (
                f" / {v['images_per_s']:.1f} ({v['images_per_s_min']:.1f}-{v['images_per_s_max']:.1f})")
            cells.append(mem + ips)
        rows.append([m["model"], f"{m['params_m']:.2f}", *cells])
    tp = f"median (min-max) of {r['repeats']} interleaved rounds" if r.get("repeats") else "not measured"
    return (f"Peak forward memory (MiB) / throughput (img/s; {tp}), batch {r['batch_size']}, {r['method']}; "
            f"device: {r['device']}\n\n" + C.markdown_table(["model", "params (M)", *[f"{s}px" for s in sizes]], rows))


def plot(r: dict, path: Path) -> None:
    has_tp = any(v.get("images_per_s") for m in r["models"] for v in m["results"].values())
    with C.figure(path, 1, 2 if has_tp else 1, figsize=(10 if has_tp else 5.5, 4), squeeze=False) as (_, axes):
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
