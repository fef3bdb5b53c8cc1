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

MACs: `lstmvision.flops.count_macs` at batch 1, fp32, which counts LSTM/GRU/RNN work analytically (most
FLOP counters skip it; sequencer2d_s at 224 = 8.33 G).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lstmvision.ops.dispatch import RNN2D_BACKENDS, get_backend, use_backend
from lstmvision.flops import count_macs, count_params

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="model to measure (repeatable): NAME, ref:NAME (official formulation: nn.LSTM modules) "
                        "or timm:NAME")
    p.add_argument("--compare", action="append", default=[], metavar="SPEC",
                   help="baseline measured in the same process (repeatable), e.g. timm:sequencer2d_s or ref:NAME")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for input and model")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--kernels", choices=RNN2D_BACKENDS, default=None,
                   help="rnn2d backend of lstmvision models: module = nn.LSTM (cuDNN/oneDNN), reference = the "
                        "step-by-step math loop, fused, triton (default: LSTMVISION_KERNELS, else auto = module); "
                        "ref: models ignore it")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=40, help="timed iterations per round")
    p.add_argument("--repeats", type=int, default=1, help="rounds (throughput is the median)")
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs")
    p.add_argument("--no-check", action="store_true", help="skip the logits comparison against baselines")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")


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


def build(spec: str, default_kernels: str | None) -> Entry:
    source, name, forced = parse_spec(spec)
    if source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
        return Entry(spec, source, name, None, model)
    from lstmvision.models import create_model, list_models

    if name not in list_models():
        raise ValueError(f"unknown lstmvision model {name!r} (see `lstmvision models`)")
    return Entry(spec, source, name, forced or default_kernels or get_backend().rnn2d,
                 create_model(name))


@contextlib.contextmanager
def kernels_ctx(kernels: str | None):
    """Force lstmvision's rnn2d backend; `module` (ref:) also takes the PyTorch mLSTM (`auto`)."""
    if kernels is None:
        yield
        return
    with use_backend(rnn2d=kernels, mlstm="auto" if kernels == "module" else None):
        yield


def _randomise_head(model: nn.Module, seed: int = 0) -> None:
    """Heads start at zero (official init): give them random weights so that logits can be compared."""
    g = torch.Generator().manual_seed(seed)
    head = getattr(model, "get_classifier", lambda: None)()
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)


def _share_weights(src: nn.Module, dst: nn.Module) -> bool:
    """Load src's weights into dst when both have the same state_dict layout (timm and lstmvision do)."""
    a, b = src.state_dict(), dst.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return False
    dst.load_state_dict(a)
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(e: Entry, x: torch.Tensor, args: argparse.Namespace, device: torch.device) -> Callable[[], Any]:
    model = e.model
    dtype = DTYPES[args.precision]
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    fn = torch.compile(model) if args.compile else model
    if args.mode == "infer":
        model.eval()

        def step():
            with kernels_ctx(e.kernels), torch.no_grad(), amp:
                return fn(x)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        target = torch.randint(0, 1000, (x.shape[0],), device=device)

        def step():
            with kernels_ctx(e.kernels):
                with amp:
                    loss = F.cross_entropy(fn(x).float(), target)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return loss
    return step


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = dict(python=platform.python_version(), torch=torch.__version__)
    for mod in ("timm", "triton", "lstmvision"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    out["cuda"] = torch.version.cuda
    return out


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but CUDA is not available")
    if args.batch_size < 1 or args.iters < 1 or args.repeats < 1 or args.warmup < 0:
        raise ValueError("--batch-size, --iters and --repeats must be >= 1, --warmup >= 0")
    entries = [build(s, args.kernels) for s in args.model]
    baselines = [build(s, args.kernels) for s in args.compare]
    everyone = entries + baselines
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # logits check: baselines get the first model's weights when the layouts match
    if entries:
        _randomise_head(entries[0].model)
    for e in everyone:
        e.result = dict(spec=e.spec, source=e.source, model=e.name, kernels=e.kernels, params=count_params(e.model))
        if not args.no_macs:
            with kernels_ctx(e.kernels):
                macs = count_macs(e.model, (3, args.img_size, args.img_size))
            e.result.update(gmacs=round(macs["total"] / 1e9, 3), gmacs_rnn=round(macs["rnn"] / 1e9, 3))
    shared = {b.spec: _share_weights(entries[0].model, b.model) for b in baselines} if entries else {}
    for e in everyone:
        e.model.to(device)
        if args.channels_last:
            e.model.to(memory_format=torch.channels_last)
    if not args.no_check and entries:
        with torch.no_grad():
            outs = {}
            for e in [entries[0]] + [b for b in baselines if shared[b.spec]]:
                e.model.eval()
                dtype = DTYPES[args.precision]
                amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
                with kernels_ctx(e.kernels), amp:
                    outs[e.spec] = e.model(x).float()
            ref = outs[entries[0].spec]
            for b in baselines:
                if b.spec in outs:
                    b.result["max_abs_logit_diff_vs_" + entries[0].spec] = float((outs[b.spec] - ref).abs().max())
    # warm-up (compiles when --compile), then interleaved timed rounds
    for e in everyone:
        e.step = make_step(e, x, args, device)
        for _ in range(args.warmup):
            e.step()
        _sync(device)
    peak = {}
    for r in range(args.repeats):
        for e in everyone:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                e.step()
            _sync(device)
            e.runs.append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak[e.spec] = max(peak.get(e.spec, 0), torch.cuda.max_memory_allocated(device) // 2**20)
            else:
                peak[e.spec] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    for e in everyone:
        sec = statistics.median(e.runs)
        e.result.update(
            img_per_s=round(args.batch_size * args.iters / sec, 2),
            ms_per_iter=round(sec / args.iters * 1e3, 2),
            img_per_s_runs=[round(args.batch_size * args.iters / s, 2) for s in e.runs],
        )
        e.result["peak_mem_mib" if device.type == "cuda" else "cpu_rss_mib"] = peak[e.spec]
    ratios = {
        f"{e.spec} / {b.spec}": round(e.result["img_per_s"] / b.result["img_per_s"], 3)
        for e in entries for b in baselines
    }
    settings = {k: getattr(args, k) for k in (
        "batch_size", "img_size", "precision", "mode", "device", "channels_last", "compile", "kernels",
        "warmup", "iters", "repeats")}
    return dict(
        command="lstmvision " + " ".join(getattr(args, "argv", None) or ["benchmark", "..."]),
        device=device_name(device), versions=versions(), settings=settings,
        results=[e.result for e in entries], baselines=[b.result for b in baselines], ratios=ratios,
        notes=("cpu_rss_mib is the process peak RSS (ru_maxrss), not a per-model figure" if device.type != "cuda"
               else "peak_mem_mib = torch.cuda.max_memory_allocated after the warm-up"),
    )


def _table(report: dict[str, Any]) -> str:
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


def run(args: argparse.Namespace) -> int:
    report = benchmark(args)
    print(_table(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
