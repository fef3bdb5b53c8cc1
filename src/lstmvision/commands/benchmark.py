"""`lstmvision benchmark`: throughput, peak memory, parameters and MACs of models, side by side.

Models are named `NAME` (lstmvision, rnn2d backend as `--kernels` says, else the active choice), `ref:NAME`
(lstmvision in the official formulation: rnn2d backend `module`, i.e. the nn.LSTM modules on cuDNN/oneDNN,
and the PyTorch mLSTM of `auto`) or `timm:NAME`
(`timm.create_model(NAME)`, random weights). `--compare SPEC` adds reference models; every `--model` gets a
throughput ratio against every `--compare`, measured in the same process with the runs interleaved.

Procedure (as the Sequencer paper's benchmark.py): `--warmup` untimed iterations, then `--repeats` rounds of
`--iters` timed iterations per model, synchronised on CUDA; throughput = batch * iters / elapsed, median over
rounds. Inference runs `eval()` under `no_grad`; training runs forward, cross-entropy on random labels,
backward and an SGD step. bf16/fp16 use autocast (weights stay fp32).

Memory: on CUDA `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()` that follows the
warm-up (MiB). On CPU no allocator statistics exist: `cpu_rss_mib` is the process's peak resident set size
(ru_maxrss) after that model ran — a process-wide high-water mark, not a per-model number.

MACs: `lstmvision.models.flops.count_macs` at batch 1, fp32, which counts LSTM/GRU/RNN work analytically (most
FLOP counters skip it; sequencer2d_s at 224 = 8.33 G).
"""
from __future__ import annotations

import contextlib
import resource
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lstmvision.constants import TIMM_PREFIX
from lstmvision.device import device_name, resolve_device, time_steps, versions
from lstmvision.models import is_model
from lstmvision.models.flops import count_macs, count_params
from lstmvision.models.loading import create_model
from lstmvision.ops.dispatch import get_backend, use_backend

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Entry:
    spec: str
    source: str  # lstmvision | timm
    name: str
    kernels: str | None  # lstmvision only
    model: nn.Module = field(repr=False)
    result: dict[str, Any] = field(default_factory=dict)
    step: Callable[[], Any] | None = field(default=None, repr=False)
    runs: list[float] = field(default_factory=list)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """'NAME' | 'ref:NAME' | 'timm:NAME' -> (source, name, forced kernels)."""
    prefix, _, rest = spec.partition(":")
    if not rest:
        return "lstmvision", spec, None
    if prefix == "timm":
        return "timm", rest, None
    if prefix == "ref":
        return "lstmvision", rest, "module"
    raise ValueError(f"model spec {spec!r}: use NAME, ref:NAME or timm:NAME")


def build(spec: str, default_kernels: str | None, img_size: int | None = None) -> Entry:
    source, name, forced = parse_spec(spec)
    if source == "timm":
        return Entry(spec, source, name, None, create_model(TIMM_PREFIX + name, img_size=img_size).eval())

    if not is_model(name):
        raise ValueError(f"unknown lstmvision model {name!r} (see `lstmvision models`)")
    return Entry(spec, source, name, forced or default_kernels or get_backend().rnn2d,
                 create_model(name).eval())


@contextlib.contextmanager
def kernels_ctx(kernels: str | None):
    """Force lstmvision's rnn2d backend; `module` (ref:) also takes the official formulation of the mLSTM
    (`parallel`: the stabilised quadratic form as the official code writes it)."""
    if kernels is None:
        yield
        return
    with use_backend(rnn2d=kernels, mlstm="parallel" if kernels == "module" else None):
        yield


def randomise_head(model: nn.Module, seed: int = 0) -> None:
    """Heads start at zero (official init): give them random weights so that logits can be compared."""
    g = torch.Generator().manual_seed(seed)
    head = getattr(model, "get_classifier", lambda: None)()
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)


def share_weights(src: nn.Module, dst: nn.Module) -> bool:
    """Load src's weights into dst when both have the same state_dict layout (timm and lstmvision do)."""
    a, b = src.state_dict(), dst.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return False
    dst.load_state_dict(a)
    return True


def make_step(model: nn.Module, x: torch.Tensor, precision: str, mode: str, compile: bool, device: torch.device,
              ctx: Callable[[], Any] = contextlib.nullcontext) -> Callable[[], Any]:
    """One timed iteration of `model` on `x`: inference under no_grad, or forward, cross-entropy on random labels
    of the model's classes, backward and an SGD step; every call runs inside a fresh `ctx()` (backend choice)."""
    dtype = DTYPES[precision]
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    fn = torch.compile(model) if compile else model
    if mode == "infer":
        model.eval()

        def step():
            with ctx(), torch.no_grad(), amp:
                return fn(x)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        target = torch.randint(0, getattr(model, "num_classes", 1000), (x.shape[0],), device=device)

        def step():
            with ctx():
                with amp:
                    loss = F.cross_entropy(fn(x).float(), target)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return loss
    return step


def benchmark(models: list[str], compare: Sequence[str] = (), batch_size: int = 8, img_size: int = 224,
              precision: str = "fp32", mode: str = "infer", device: str | None = None, channels_last: bool = False,
              compile: bool = False, kernels: str | None = None, warmup: int = 10, iters: int = 40,
              repeats: int = 1, macs: bool = True, check: bool = True, command: str | None = None) -> dict[str, Any]:
    """Measure every spec of `models` and `compare` (see the module docstring); the report as a dict."""
    dev = resolve_device(device)
    if batch_size < 1 or iters < 1 or repeats < 1 or warmup < 0:
        raise ValueError("--batch-size, --iters and --repeats must be >= 1, --warmup >= 0")
    entries = [build(s, kernels, img_size) for s in models]
    baselines = [build(s, kernels, img_size) for s in compare]
    everyone = entries + baselines
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # logits check: baselines get the first model's weights when the layouts match
    if entries:
        randomise_head(entries[0].model)
    for e in everyone:
        e.result = dict(spec=e.spec, source=e.source, model=e.name, kernels=e.kernels, params=count_params(e.model))
        if macs:
            with kernels_ctx(e.kernels):
                counted = count_macs(e.model, (3, img_size, img_size))
            e.result.update(gmacs=round(counted["total"] / 1e9, 3), gmacs_rnn=round(counted["rnn"] / 1e9, 3))
    shared = {b.spec: share_weights(entries[0].model, b.model) for b in baselines} if entries else {}
    for e in everyone:
        e.model.to(dev)
        if channels_last:
            e.model.to(memory_format=torch.channels_last)
    if check and entries:
        _check_logits(entries[0], [b for b in baselines if shared[b.spec]], x, precision, dev)
    # warm-up (compiles when compile=True), then interleaved timed rounds
    for e in everyone:
        e.step = make_step(e.model, x, precision, mode, compile, dev, lambda e=e: kernels_ctx(e.kernels))
        time_steps(e.step, warmup, dev)  # the warm-up's time is not used
    peak = {}
    for _ in range(repeats):
        for e in everyone:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            e.runs.append(time_steps(e.step, iters, dev))
            if dev.type == "cuda":
                peak[e.spec] = max(peak.get(e.spec, 0), torch.cuda.max_memory_allocated(dev) // 2**20)
            else:
                peak[e.spec] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    for e in everyone:
        sec = statistics.median(e.runs)
        e.result.update(
            img_per_s=round(batch_size * iters / sec, 2),
            ms_per_iter=round(sec / iters * 1e3, 2),
            img_per_s_runs=[round(batch_size * iters / s, 2) for s in e.runs],
        )
        e.result["peak_mem_mib" if dev.type == "cuda" else "cpu_rss_mib"] = peak[e.spec]
    ratios = {
        f"{e.spec} / {b.spec}": round(e.result["img_per_s"] / b.result["img_per_s"], 3)
        for e in entries for b in baselines
    }
    settings = dict(batch_size=batch_size, img_size=img_size, precision=precision, mode=mode, device=str(dev),
                    channels_last=channels_last, compile=compile, kernels=kernels, warmup=warmup, iters=iters,
                    repeats=repeats)
    return dict(
        command=command or "lstmvision benchmark ...",
        device=device_name(dev), versions=versions(), settings=settings,
        results=[e.result for e in entries], baselines=[b.result for b in baselines], ratios=ratios,
        notes=("cpu_rss_mib is the process peak RSS (ru_maxrss), not a per-model figure" if dev.type != "cuda"
               else "peak_mem_mib = torch.cuda.max_memory_allocated after the warm-up"),
    )


def _check_logits(first: Entry, baselines: list[Entry], x: torch.Tensor, precision: str,
                  device: torch.device) -> None:
    """Max |logit difference| of each baseline (sharing `first`'s weights) against `first`, into its result."""
    dtype = DTYPES[precision]
    outs = {}
    with torch.no_grad():
        for e in [first] + baselines:
            e.model.eval()
            amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with kernels_ctx(e.kernels), amp:
                outs[e.spec] = e.model(x).float()
    for b in baselines:
        b.result["max_abs_logit_diff_vs_" + first.spec] = float((outs[b.spec] - outs[first.spec]).abs().max())


def table(report: dict[str, Any]) -> str:
    rows = report["results"] + report["baselines"]
    mem = "peak_mem_mib" if any("peak_mem_mib" in r for r in rows) else "cpu_rss_mib"
    head = f"{'model':32} {'kernels':10} {'img/s':>10} {'ms/iter':>9} {mem:>12} {'params':>12} {'GMACs':>7}"
    lines = [f"# {report['device']} | {report['settings']}", head]
    for r in rows:
        lines.append(f"{r['spec']:32} {str(r['kernels'] or '-'):10} {r['img_per_s']:>10.2f} {r['ms_per_iter']:>9.2f} "
                     f"{r.get(mem, 0):>12} {r['params']:>12,} {r.get('gmacs', float('nan')):>7.2f}")
    for k, v in report["ratios"].items():
        lines.append(f"ratio {k}: {v:.3f}x")
    for r in report["baselines"]:
        for k, v in r.items():
            if k.startswith("max_abs_logit_diff"):
                lines.append(f"{r['spec']}: {k} = {v:.3g}")
    return "\n".join(lines)
