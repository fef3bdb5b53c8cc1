"""Fashion-MNIST reproduction of the Sequencer and Vision-LSTM claims on a CPU: models that learned, the paper's
ablation table, and the analyses on them.

    scripts/reproduce_fashion_mnist.sh [--reuse]     # full: results/fashion_mnist/full (about 3 h on 2 CPU cores)
    scripts/reproduce_fashion_mnist.sh --quick       # CI scale: results/fashion_mnist/quick (about 2 min)

Every model is trained by the engine, in-process, exactly as the command line does it: `lstmvision train --recipe
sequencer-small --model ARCH [--model-kwargs ...] OVERRIDES --output OUT/runs --experiment NAME` on all 60,000
Fashion-MNIST training images at their native 28 px, scored on the 10,000 test images. OVERRIDES (the same for every
run of a mode, plus the run's epochs and, for the ablations, its seed) are stated in summary.md; everything else is
the recipe's. The full mode, most important first:

1. the six compared models (parameter counts within 2x of each other): Sequencer2D (`sequencer2d_tiny`), the
   vanilla 1-D Sequencer (`v_sequencer_tiny`), ViL (`vil2_tiny` narrowed), and from timm a DeiT, a ConvNeXt and a
   ResNet, narrowed to the same size; one recipe, epochs per model (COMPARED) so that each passes 90 % top-1;
2. the analyses on their final (`last/`) checkpoints: resolution sweep 0.5x-2x (14-56 px), ERF maps of each
   model's default layers (every stage / evenly spaced blocks) with the cross ratio, corruption robustness
   (15 corruptions x severities 1, 3, 5 on 200 test images; CE and mCE relative to the ResNet) with FGSM, peak
   memory and throughput 28-224 px (8x), and ViL's memory with the chunkwise (linear) mLSTM forced;
3. the Sequencer ablation table (sequencer.md §1.2 at small scale, 2 seeds, 2 epochs): BiLSTM2D, vanilla 1-D,
   unidirectional, vertical-only, horizontal-only, add instead of concat, without fc, GRU, RNN;
4. the ViL ablations (vision-lstm.md §1.7, one seed, one epoch on 24,000 training images): poolings and
   direction designs of the v1 ablation configs (`vil_tiny_pool_*`, `vil_tiny_dir_*`) narrowed.

After every phase summary.md (tables, PNG plots, the command, device, wall times, every claim as holds / does not
hold with its numbers, all computed from the JSON outputs) and summary.json (`models: [{name, architecture,
params, top1, ...}]` for the compared models and every ablation run, `claims`, `ablations`) are rewritten, so an
interrupted run leaves a summary of what is done. `--reuse` skips every finished training (same settings) and
resumes an unfinished one from its `last/`; the analyses are re-run (minutes). Run folders (OUT/runs/NAME,
git-ignored: weights) keep config.yaml, summary.csv, curves.png; the first three are copied to
OUT/training/NAME/ (the per-model summary.csv).

The quick mode runs the same pipeline on tiny models and subsets: it only proves the pipeline, its numbers mean
nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lstmvision import cli  # noqa: E402
from lstmvision.commands.analysis import common as C  # noqa: E402
from lstmvision.commands.analysis.robustness import ce_baseline, mean_pct  # noqa: E402
from lstmvision.device import resolve_device  # noqa: E402
from lstmvision.engine.recipes import get_recipe  # noqa: E402
from lstmvision.engine.summary import read_summary  # noqa: E402
from lstmvision.models.loading import create_model  # noqa: E402
from lstmvision.outputs import write_text  # noqa: E402
from lstmvision.weights import find_checkpoint, read_config  # noqa: E402

RECIPE = "sequencer-small"
NATIVE = 28
MIN_TOP1 = 90.0  # the bar for the compared models
CROSS_MIN = 1.5  # on/off-cross ERF ratio above which a map counts as cross-shaped
LINEAR_SLACK = 1.25  # "linear in tokens": memory growth at most 1.25x the token ratio
SEQUENCERS = ("sequencer2d", "vanilla_sequencer")


@dataclass
class Run:
    """One training: run folder / label `name`, architecture, model kwargs, epochs, group and (ablations) seed."""
    name: str
    arch: str
    kwargs: dict[str, Any]
    epochs: int
    group: str = "compared"  # compared | sequencer_ablation | vil_ablation
    variant: str = ""
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # further overrides (e.g. limit_train)

    def overrides(self, common: dict[str, Any]) -> dict[str, Any]:
        o = dict(common, epochs=self.epochs, **self.extra)
        if self.seed is not None:
            o["seed"] = self.seed
        return o


# ------------------------------------------------------------------------------------------ the plans
# name -> (architecture, model kwargs, epochs). Parameters 0.16-0.29 M (within 2x). One recipe; the epochs are
# what each model needs to pass 90 % test top-1 with it: budgets of about 10 minutes (ViL 4, DeiT 8, ConvNeXt 4,
# vanilla 6 epochs) left those four at 87-89 %. A training step costs, relative to Sequencer2D's (batch 128, quiet
# 2-core CPU): ViL ~4.3x, ConvNeXt ~2x, vanilla Sequencer ~1.5x, DeiT ~1.2x, ResNet ~0.6x; summary.md has the
# measured training times.
COMPARED = {
    "full": {
        "sequencer2d": ("sequencer2d_tiny", {}, 8),
        "vil": ("vil2_tiny", dict(patch_size=4, embed_dim=72, depth=4), 10),
        # dynamic_img_pad: sizes that are no multiple of the patch (14, 21, 42 px) are padded, not refused
        "deit": ("timm:deit_tiny_patch16_224",
                 dict(patch_size=4, embed_dim=64, depth=4, num_heads=2, dynamic_img_pad=True), 26),
        # patch-1 stem: four stride-2 stages need >= 8 px after the stem at 0.5x (14 px)
        "convnext": ("timm:convnext_atto", dict(patch_size=1, depths=[1, 1, 2, 1], dims=[16, 32, 64, 128]), 12),
        "resnet": ("timm:resnet18", dict(layers=[1, 1, 1, 1], channels=[16, 32, 64, 112], stem_width=16), 8),
        "vanilla_sequencer": ("v_sequencer_tiny", {}, 12),
    },
    "quick": {
        "sequencer2d": ("sequencer2d_tiny", dict(layers=[1, 1], embed_dims=[32, 64], hidden_sizes=[16, 32]), 1),
        "vil": ("vil2_tiny", dict(patch_size=4, embed_dim=32, depth=2), 1),
        "deit": ("timm:deit_tiny_patch16_224",
                 dict(patch_size=4, embed_dim=32, depth=2, num_heads=2, dynamic_img_pad=True), 1),
        "convnext": ("timm:convnext_atto", dict(patch_size=1, depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]), 1),
        "resnet": ("timm:resnet18", dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], stem_width=8), 1),
        "vanilla_sequencer": ("v_sequencer_tiny", dict(layers=[1, 1], embed_dims=[32, 32], hidden_sizes=[16, 16]), 1),
    },
}
BASELINE = "resnet"  # the CE reference (AlexNet's role in ImageNet-C)

# The Sequencer ablation base: sequencer2d_tiny with one block per stage and hidden = C/4, the ratio of
# sequencer2d_s, so that each variant changes what its sequencer2d_s_* counterpart changes (sequencer.md §1.2).
ABLATION_BASE = {
    "full": dict(layers=[1, 1], embed_dims=[48, 96], hidden_sizes=[12, 24]),
    "quick": dict(layers=[1, 1], embed_dims=[16, 32], hidden_sizes=[4, 8]),
}
ABLATION_EPOCHS = {"full": 2, "quick": 1}
ABLATION_SEEDS = {"full": [0, 1], "quick": [0, 1]}


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2))


def _twice(hidden: list[int]) -> list[int]:
    return [2 * h for h in hidden]


# variant -> (model kwargs on top of the base, hidden sizes rule, the official registered counterpart)
SEQ_ABLATIONS: dict[str, tuple[dict[str, Any], Any, str]] = {
    "bilstm2d": ({}, None, "sequencer2d_s"),
    "vanilla_1d": (dict(mixer="1d"), _twice, "v_sequencer_s_h"),
    "unidirectional": (dict(bidirectional=False), None, "sequencer2d_s_unidirectional"),
    "vertical_only": (dict(union="vertical", with_fc=False), _twice, "sequencer2d_vertical"),
    "horizontal_only": (dict(union="horizontal", with_fc=False), _twice, "sequencer2d_s_horizontal"),
    "add": (dict(union="add"), None, "sequencer2d_s_add"),
    "without_fc": (dict(with_fc=False), None, "sequencer2d_s_without_fc"),
    "gru": (dict(rnn_type="gru"), None, "gru_sequencer2d_s"),
    "rnn": (dict(rnn_type="rnn"), None, "rnn_sequencer2d_s"),
}
# (name, left, right): the paper's orderings, "left over right" by mean top-1
ORDERINGS = [
    ("2-D over 1-D (BiLSTM2D > vanilla 1-D)", [("bilstm2d", "vanilla_1d")]),
    ("bidirectional over unidirectional", [("bilstm2d", "unidirectional")]),
    ("both axes over one (> vertical-only and > horizontal-only)",
     [("bilstm2d", "vertical_only"), ("bilstm2d", "horizontal_only")]),
    ("LSTM over GRU over RNN", [("bilstm2d", "gru"), ("gru", "rnn")]),
    ("concat over add", [("bilstm2d", "add")]),
    ("with fc over without fc", [("bilstm2d", "without_fc")]),
]

# ViL ablations: the v1 ablation configs (vision-lstm.md §1.7) narrowed. The direction design 'alternating' with
# v1's bilateral_avg pooling is vil_tiny_pool_bilateral_avg (the same network as vil_tiny_dir_alternating), so
# it is trained once and is the reference of both tables.
VIL_ABLATION_BASE = {"full": dict(patch_size=4, embed_dim=32, depth=4),
                     "quick": dict(patch_size=4, embed_dim=16, depth=2)}
VIL_ABLATION_EPOCHS = {"full": 1, "quick": 1}
# ViL costs about 4x a Sequencer of its size per image on a CPU: its ablations see 24,000 of the training images
VIL_ABLATION_EXTRA: dict[str, dict[str, Any]] = {"full": dict(limit_train=24000), "quick": {}}
VIL_POOLINGS = {"bilateral_flatten": "vil_tiny_pool_bilateral_flatten", "bilateral_avg": "vil_tiny_pool_bilateral_avg",
                "avg": "vil_tiny_pool_avg", "middle": "vil_tiny_pool_middle", "cls": "vil_tiny_pool_cls"}
VIL_DIRECTIONS = {"alternating": "vil_tiny_pool_bilateral_avg", "unidirectional": "vil_tiny_dir_unidirectional",
                  "quad_alternating": "vil_tiny_dir_quad_alternating"}

# The recipe settings each mode overrides (engine setting -> value); every other setting is the recipe's.
OVERRIDES: dict[str, dict[str, Any]] = {
    "full": dict(img_size=NATIVE, batch_size=128, warmup_epochs=0.5),
    "quick": dict(img_size=NATIVE, batch_size=64, warmup_epochs=0.1, limit_train=512, limit_val=200),
}
QUICK_ABLATION_LIMIT = dict(limit_train=192, limit_val=100)
SCALE = {
    "full": dict(res_limit=2000, erf_images=32, rob_limit=200, corruptions=None, severities=[1, 3, 5],
                 mem_sizes=[28, 56, 112, 224], mem_batch=4, mem_iters=3, mem_repeats=5),
    "quick": dict(res_limit=200, erf_images=4, rob_limit=64, corruptions=["gaussian_noise", "contrast"],
                  severities=[3], mem_sizes=[28, 56], mem_batch=2, mem_iters=1, mem_repeats=2),
}
FACTORS = ["0.5", "0.75", "1", "1.5", "2"]


def plan(mode: str) -> list[Run]:
    """Every training of `mode`, in the order they run (most important first)."""
    runs = [Run(n, a, kw, e) for n, (a, kw, e) in COMPARED[mode].items()]
    base = ABLATION_BASE[mode]
    extra = QUICK_ABLATION_LIMIT if mode == "quick" else {}
    for seed in ABLATION_SEEDS[mode]:
        for variant, (kw, hidden, _) in SEQ_ABLATIONS.items():
            kwargs = dict(base, **kw)
            if hidden is not None:
                kwargs["hidden_sizes"] = hidden(base["hidden_sizes"])
            runs.append(Run(f"abl-{variant}-s{seed}", "sequencer2d_tiny", kwargs, ABLATION_EPOCHS[mode],
                            "sequencer_ablation", variant, seed, dict(extra)))
    vextra = dict(VIL_ABLATION_EXTRA[mode], **extra)
    for arch in dict.fromkeys([*VIL_POOLINGS.values(), *VIL_DIRECTIONS.values()]):
        runs.append(Run(f"vilabl-{arch.replace('vil_tiny_', '')}", arch, dict(VIL_ABLATION_BASE[mode]),
                        VIL_ABLATION_EPOCHS[mode], "vil_ablation", arch, 0, dict(vextra)))
    return runs


# ------------------------------------------------------------------------------------------- training
def busy_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by the rest of the machine over `seconds` (from /proc/stat, while this process waits);
    0 where /proc/stat is missing."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return 0.0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores * (1 - (i1 - i0) / max(t1 - t0, 1))


def auto_threads() -> int:
    """Compute threads for the next step on CPU: every core unless other jobs keep one busy (more threads than
    free cores stall the LSTM kernels: see runtime.cpu_threads)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, round(cores - busy_cores())))


def train_argv(arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], runs: Path, name: str,
               data: str, device: str, workers: int, threads: int | None = None) -> list[str]:
    """`lstmvision train` arguments for one model: the recipe, the model, the overrides, where to write."""
    argv = ["train", "--recipe", RECIPE, "--model", arch]
    if kwargs:
        argv += ["--model-kwargs", *(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in kwargs.items())]
    for key, value in overrides.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    argv += ["--data", data, "--device", device, "--workers", str(workers)]
    if threads:
        argv += ["--threads", str(threads)]
    return argv + ["--output", str(runs), "--experiment", name]


def finished(run: Path, arch: str, kwargs: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Whether `run` holds a complete run of exactly this model and these settings (for --reuse)."""
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file() or not (run / "last").is_dir():
        return False
    saved = yaml.safe_load(cfg_file.read_text())
    wanted = dict(overrides, model=arch, model_kwargs=kwargs, recipe=RECIPE)
    differ = [k for k, v in wanted.items() if saved.get(k) != v]
    if differ:
        raise SystemExit(f"{run} is a run with other settings ({', '.join(differ)}); remove it or use another --out")
    return len(read_summary(run)) >= overrides["epochs"]


def train_model(name: str, arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], out: Path, args,
                device: str, workers: int, threads: int | None = None) -> dict[str, Any]:
    """Train `name` through `lstmvision train` (or reuse / resume its run with --reuse); record it in OUT/training."""
    run, record = out / "runs" / name, out / "training" / name
    argv = train_argv(arch, kwargs, overrides, out / "runs", name, args.data, device, workers, threads)
    reused = args.reuse and finished(run, arch, kwargs, overrides)
    record.mkdir(parents=True, exist_ok=True)
    if not reused:
        resumed = (run / "last").exists()
        if resumed and not args.reuse:
            raise SystemExit(f"{run} already holds a run: pass --reuse to reuse or finish it, or remove it")
        if resumed:
            argv += ["--resume", str(run)]
        t0 = time.time()
        rc = cli.main(argv)
        if rc:
            raise SystemExit(f"training {name} failed with exit status {rc}")
        seconds = round(time.time() - t0, 1)
        if resumed and (record / "train.json").is_file():  # time of the interrupted part, as recorded before
            seconds += json.loads((record / "train.json").read_text()).get("seconds") or 0
        write_json(record / "train.json", dict(command=shlex.join(["lstmvision", *argv]), resumed=resumed,
                                                 seconds=round(seconds, 1), load=os.getloadavg()[0]
                                                 if hasattr(os, "getloadavg") else None))
    for f in ("summary.csv", "config.yaml", "curves.png"):
        if (run / f).is_file():
            shutil.copy2(run / f, record / f)
    return describe(name, arch, kwargs, run, record, reused)


def describe(name: str, arch: str, kwargs: dict[str, Any], run: Path, record: Path, reused: bool) -> dict[str, Any]:
    """The summary entry of a trained model, read back from its run folder (last/ checkpoint and summary.csv).

    `top1` is the final epoch's test top-1 (the checkpoint the analyses use; no selection on the test set);
    `best_top1` is the best epoch's, for reference."""
    model = create_model(str(run / "last")).eval()
    saved_arch = read_config(find_checkpoint(run / "last"))["architecture"]
    if saved_arch != arch:  # the label is the checkpoint's own architecture name, never a hand-typed one
        raise SystemExit(f"{run}/last holds {saved_arch!r}, not {arch!r}")
    rows = read_summary(run)
    best = max(rows, key=lambda r: r["top1"])
    log = json.loads((record / "train.json").read_text()) if (record / "train.json").is_file() else {}
    secs = log.get("seconds")
    return dict(name=name, architecture=saved_arch, model_kwargs=kwargs,
                params=sum(p.numel() for p in model.parameters()), top1=round(rows[-1]["top1"], 2),
                best_top1=round(best["top1"], 2), best_epoch=best["epoch"], epochs=len(rows),
                final_train_loss=round(rows[-1]["train_loss"], 4), train_s=secs,
                epoch_s=round(secs / len(rows), 1) if secs else None, command=log.get("command"),
                run=str(run), checkpoint=str(run / "last"), reused=reused)


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI scale (tiny models and subsets, about 2 CPU-minutes)")
    p.add_argument("--reuse", "--reuse-checkpoints", dest="reuse", action="store_true",
                   help="skip training where OUT/runs/NAME holds a finished run of the same settings; resume an "
                        "unfinished one")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", help="output folder (default results/fashion_mnist/{full,quick})")
    p.add_argument("--device", help="cpu or cuda for training and the analyses (default: cuda if available)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0: loading 28 px "
                   "images in the main process was the fastest on 2 cores)")
    p.add_argument("--threads", type=int,
                   help="compute threads on CPU (default, full mode: before each step, the cores that other jobs "
                        "leave free; quick: the engine's rule)")
    p.add_argument("--skip-ablations", action="store_true", help="only the compared models and the analyses")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out = Path(args.out or ROOT / "results" / "fashion_mnist" / mode)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    auto = mode == "full" and device.type == "cpu" and not args.threads
    threads = args.threads
    common = OVERRIDES[mode]
    t_start = time.time()
    state: dict[str, Any] = dict(
        mode=mode, command="scripts/reproduce_fashion_mnist.sh " + shlex.join(sys.argv[1:] if argv is None else argv),
        device=C.device_description(device), recipe=RECIPE, recipe_overrides=common,
        runtime=dict(workers=args.workers, threads="auto (the free cores, per step)" if auto else threads),
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        timings_s={}, errors=[], models=[])
    runs = plan(mode)
    if args.skip_ablations:
        runs = [r for r in runs if r.group == "compared"]

    def finish_phase():
        state["timings_s"]["this_invocation"] = round(time.time() - t_start, 1)
        write_summary(out, state)

    def train(run: Run):
        n = auto_threads() if auto and not (args.reuse and finished(out / "runs" / run.name, run.arch, run.kwargs,
                                                                     run.overrides(common))) else threads
        entry = train_model(run.name, run.arch, run.kwargs, run.overrides(common), out, args, str(device),
                            args.workers, n)
        entry.update(group=run.group, variant=run.variant or run.name, seed=run.seed)
        state["models"] = [m for m in state["models"] if m["name"] != run.name] + [entry]
        print(f"trained {run.name}: top-1 {entry['top1']}% ({entry['params']} params, {entry['train_s']} s)",
              flush=True)

    # 1. the compared models
    for run in (r for r in runs if r.group == "compared"):
        train(run)
    finish_phase()
    # 2. the analyses on them
    if device.type == "cpu" and (threads or auto):
        torch.set_num_threads(auto_threads() if auto else threads)
    run_analyses(out, state, mode, args, device)
    finish_phase()
    # 3. and 4. the ablations, seed by seed (each finished run is kept; the summary grows)
    for group in ("sequencer_ablation", "vil_ablation"):
        for run in (r for r in runs if r.group == group):
            train(run)
            if run.group == "sequencer_ablation" and run.variant == list(SEQ_ABLATIONS)[-1]:
                finish_phase()  # after each full seed of the table
        finish_phase()
    print((out / "summary.md").read_text())
    return 1 if state["errors"] else 0


def run_analyses(out: Path, state: dict, mode: str, args, device: torch.device) -> None:
    """The four analyses on the compared models' final checkpoints; a failing step is recorded, not fatal."""
    scale = SCALE[mode]
    ckpts = {m["name"]: m["checkpoint"] for m in state["models"] if m["group"] == "compared"}
    dev, jobs = ["--device", str(device)], ["--workers", str(args.workers)]
    timings = state["timings_s"]

    def step(key: str, argv: list[str]) -> None:
        t = time.time()
        try:
            rc = cli.main([*argv, "--overwrite"])  # each run of the script recomputes the analyses
        except Exception as e:  # noqa: BLE001 - recorded in the summary, the other analyses still run
            traceback.print_exc()
            rc = f"{type(e).__name__}: {e}"
        timings[key] = round(time.time() - t, 1)
        if rc:
            state["errors"].append(f"{key}: {rc}")

    step("resolution", ["resolution-sweep", "--checkpoint", *ckpts.values(), "--data", args.data,
                        "--factors", *FACTORS, "--interpolation", "bilinear", "--limit", str(scale["res_limit"]),
                        "-o", str(out / "resolution"), *dev, *jobs])
    step("erf", ["erf", "--checkpoint", *ckpts.values(), "--data", args.data, "--images", str(scale["erf_images"]),
                 "--interpolation", "bilinear", "-o", str(out / "erf"), *dev, *jobs])
    rob = ["--limit", str(scale["rob_limit"])]
    if scale["corruptions"]:
        rob += ["--corruptions", *scale["corruptions"]]
    if scale["severities"]:
        rob += ["--severities", *map(str, scale["severities"])]
    for name, ck in ckpts.items():  # each model once; CE against the ResNet from the JSONs (same images)
        step(f"robustness_{name}", ["robustness", "--checkpoint", ck, "--data", args.data, *rob,
                                    "--attack", "fgsm", "--eps", "1/255", "--interpolation", "bilinear",
                                    "-o", str(out / "robustness" / name), *dev, *jobs])
    try:
        mce_vs_baseline(out, list(ckpts))
    except Exception as e:  # noqa: BLE001
        state["errors"].append(f"mce_vs_baseline: {type(e).__name__}: {e}")
    mem = ["--sizes", *map(str, scale["mem_sizes"]), "--batch-size", str(scale["mem_batch"])]
    step("memory", ["memory", "--checkpoint", *ckpts.values(), *mem, "--iters", str(scale["mem_iters"]),
                    "--repeats", str(scale["mem_repeats"]),
                    "--warmup", "1", "-o", str(out / "memory"), *dev])
    step("memory_vil_chunkwise", ["memory", "--checkpoint", ckpts["vil"], "--mlstm-backend", "chunkwise", *mem,
                                  "--no-throughput", "-o", str(out / "memory_vil_chunkwise"), *dev])


def mce_vs_baseline(out: Path, names: list[str]) -> None:
    """robustness/mce.json and .md: each model's CE per corruption, mCE and relative mCE against BASELINE, by
    `lstmvision.analysis.robustness.ce_baseline` (the tool's `--baseline` arithmetic) on the per-severity top-1 of
    the robustness runs - every model saw exactly the same corrupted images (fixed seeds), so evaluating the
    baseline once is enough."""
    reps = {n: _load(out / "robustness" / n / "robustness.json") for n in names}
    reps = {n: r for n, r in reps.items() if r}
    if BASELINE not in reps:
        return

    def errors(r):
        return ({c: {int(k): 1 - v / 100 for k, v in per.items()} for c, per in r["top1"].items()},
                1 - r["clean_top1"] / 100)

    b_err, b_clean = errors(reps[BASELINE])
    table = {}
    for n, r in reps.items():
        err, clean = errors(r)
        ce, rce = ce_baseline(err, b_err, clean, b_clean)
        table[n] = dict(clean_top1=r["clean_top1"], mean_error=r["mean_error"], mce=mean_pct(ce),
                        relative_mce=mean_pct(rce), ce={c: 100 * v for c, v in ce.items()},
                        fgsm_top1=(r.get("adversarial") or {}).get("top1"))
    any_r = reps[BASELINE]
    report = dict(baseline=BASELINE, images=any_r.get("images"), corruptions=list(any_r["top1"]),
                  severities=sorted({int(k) for per in any_r["top1"].values() for k in per}), models=table)
    write_json(out / "robustness" / "mce.json", report)
    md = C.markdown_table(["model", "clean top-1 %", "mean corruption error %", f"mCE (vs {BASELINE} = 100)",
                           "relative mCE", "FGSM 1/255 top-1 %"],
                          [[n, t["clean_top1"], t["mean_error"], t["mce"], t["relative_mce"],
                            t["fgsm_top1"] if t["fgsm_top1"] is not None else "-"] for n, t in table.items()])
    (out / "robustness" / "mce.md").write_text(
        f"{report['images']} test images x {len(report['corruptions'])} corruptions x severities "
        f"{', '.join(map(str, report['severities']))}; CE_c = sum_s E / sum_s E_{BASELINE}, relative CE from the "
        f"errors above each model's clean error.\n\n" + md)


# ------------------------------------------------------------------------------------------- summary
def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "holds" if ok else "does not hold"


def _f(v: Any, nd: int = 2) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v)


def _ratio(v: Any) -> float:
    """A cross ratio from erf.json ('inf' / 'nan' are strings there)."""
    return float(v)


def ablation_stats(models: list[dict]) -> dict[str, dict]:
    """Sequencer ablation variant -> {seeds, top1s, mean, std (sample, n-1), min, max, params}."""
    out: dict[str, dict] = {}
    for variant in SEQ_ABLATIONS:
        ms = sorted((m for m in models if m["group"] == "sequencer_ablation" and m["variant"] == variant),
                    key=lambda m: m["seed"])
        if not ms:
            continue
        t = [m["top1"] for m in ms]
        out[variant] = dict(seeds=[m["seed"] for m in ms], top1=t, mean=round(statistics.fmean(t), 3),
                            std=round(statistics.stdev(t), 3) if len(t) > 1 else None, min=min(t), max=max(t),
                            params=ms[0]["params"], official=SEQ_ABLATIONS[variant][2],
                            model_kwargs=ms[0]["model_kwargs"], epochs=ms[0]["epochs"])
    return out


def claims(out: Path, s: dict) -> list[dict]:
    """Every claim as {claim, holds (True/False/None), detail}, computed from the JSON outputs."""
    res: list[dict] = []

    def add(claim: str, holds: bool | None, detail: str) -> None:
        res.append(dict(claim=claim, holds=holds, verdict=_verdict(holds), detail=detail))

    comp = [m for m in s["models"] if m["group"] == "compared"]
    if comp:
        low = [m["name"] for m in comp if m["top1"] < MIN_TOP1]
        add(f"every compared model reaches >= {MIN_TOP1:.0f}% test top-1 at 28 px", not low and len(comp) == 6,
            ", ".join(f"{m['name']} {m['top1']:.2f}%" for m in comp) + (f"; below: {', '.join(low)}" if low else ""))
        params = {m["name"]: m["params"] for m in comp}
        spread = max(params.values()) / min(params.values())
        add("the compared models' parameter counts are within 2x of each other", spread <= 2,
            f"{min(params.values()):,}-{max(params.values()):,} parameters, max/min {spread:.2f}")

    # resolution: drop from 1x to 2x
    r = _load(out / "resolution" / "resolution.json")
    if r:
        drops, at1 = {}, {}
        for e in r["results"]:
            n = e["native_size"]
            a1, a2 = e["top1"].get(str(n)), e["top1"].get(str(2 * n))
            if a1 is not None and a2 is not None:
                drops[e["model"]], at1[e["model"]] = a1 - a2, a1
        if "sequencer2d" in drops:
            others = {m: d for m, d in drops.items() if m not in SEQUENCERS}
            ok = all(drops["sequencer2d"] <= d for d in others.values()) if others else None
            add("Sequencer2D degrades least at double resolution (56 px for a 28 px model; sequencer.md §4.5)", ok,
                "top-1 drop from 1x to 2x in points: " + ", ".join(f"{m} {d:.1f} (from {at1[m]:.1f}%)"
                                                                   for m, d in drops.items())
                + " (the vanilla Sequencer is listed, not counted as a competitor)")
    # ERF cross shape
    e = _load(out / "erf" / "erf.json")
    if e:
        seq = [m for m in e["maps"] if m["model"] == "sequencer2d"]
        others = [_ratio(m["cross_ratio"]) for m in e["maps"] if m["model"] not in SEQUENCERS]
        finite = [v for v in others if math.isfinite(v)]
        ref = max(finite) if finite else float("nan")
        if seq:
            per = [(m["layer"], _ratio(m["cross_ratio"])) for m in seq]
            ok = all(v >= CROSS_MIN and (not finite or v > ref) for _, v in per)
            add(f"Sequencer2D's ERF is cross-shaped at every stage (on/off-cross ratio >= {CROSS_MIN} and above "
                "every non-Sequencer model's; sequencer.md §4.7)", ok,
                "Sequencer2D " + ", ".join(f"{l} {_f(v)}" for l, v in per)
                + f"; highest non-Sequencer ratio {_f(ref)} ("
                + ", ".join(f"{m['model']} {m['layer']} {_f(_ratio(m['cross_ratio']))}" for m in e["maps"]
                            if m["model"] not in SEQUENCERS) + ")")
    # memory and throughput
    mem = _load(out / "memory" / "memory.json")
    if mem:
        sizes = sorted({int(k) for m in mem["models"] for k in m["results"]})
        lo, hi = str(sizes[0]), str(sizes[-1])
        tok = (int(hi) / int(lo)) ** 2
        per = {m["model"]: m["results"] for m in mem["models"]}

        def growth(rs):
            a, b = rs.get(lo, {}).get("peak_mib"), rs.get(hi, {}).get("peak_mib")
            return b / a if a and b else None

        g = {m: growth(rs) for m, rs in per.items()}
        thr = {m: (rs.get(hi, {}).get("images_per_s"), rs.get(lo, {}).get("images_per_s")) for m, rs in per.items()}
        if g.get("sequencer2d") and g.get("deit"):
            pk = {m: per[m][hi]["peak_mib"] for m in ("sequencer2d", "deit")}
            add(f"LSTM token mixing is memory-economical at high resolution: Sequencer2D's peak forward memory at "
                f"{hi} px ({int(hi) // int(lo)}x) is below DeiT's (attention; sequencer.md §4.4)",
                pk["sequencer2d"] < pk["deit"],
                f"peak at {hi} px: " + ", ".join(f"{m} {rs[hi]['peak_mib']:.1f} MiB" for m, rs in per.items()
                                               if rs.get(hi, {}).get("peak_mib"))
                + f"; growth {lo} -> {hi} px ({tok:.0f}x the tokens): "
                + ", ".join(f"{m} {v:.1f}x" for m, v in g.items() if v)
                + " (timm's DeiT uses PyTorch's fused attention, which does not store the token x token matrix)")
            t_seq, t_deit = thr["sequencer2d"][1], thr["deit"][1]
            if t_seq and t_deit:
                spread = {m: per[m][lo] for m in ("sequencer2d", "deit")}
                add(f"LSTM token mixing is slower in throughput (the paper's narrative; sequencer.md §4.4): "
                    f"Sequencer2D's images/s at {lo} px below DeiT's", t_seq < t_deit,
                    f"images/s (median of {mem.get('repeats')} interleaved rounds, batch {mem['batch_size']}) at "
                    f"{lo} / {hi} px: " + ", ".join(f"{m} {b_:.1f} / {a_:.1f}" for m, (a_, b_) in thr.items()
                                                   if a_ and b_)
                    + f"; range at {lo} px: " + ", ".join(
                        f"{m} {r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f}"
                        for m, r in spread.items()))
        ck = _load(out / "memory_vil_chunkwise" / "memory.json")
        if ck:
            gc = growth(ck["models"][0]["results"])
            if gc:
                add(f"ViL is linear in tokens (chunkwise mLSTM: peak memory growth within {LINEAR_SLACK}x of the "
                    "token ratio)", gc <= LINEAR_SLACK * tok,
                    f"{lo} -> {hi} px = {tok:.0f}x the tokens: chunkwise {gc:.1f}x"
                    + (f", default backend (parallel up to 256 tokens) {g['vil']:.1f}x" if g.get("vil") else ""))
    # robustness
    rob = (_load(out / "robustness" / "mce.json") or {}).get("models", {})
    if rob:
        mce = {k: v["mce"] for k, v in rob.items() if isinstance(v["mce"], (int, float)) and math.isfinite(v["mce"])}
        if "sequencer2d" in mce and len(mce) > 1:
            ok = all(mce["sequencer2d"] <= v for k, v in mce.items() if k not in SEQUENCERS)
            add(f"Sequencer2D is the most corruption-robust of the architectures (lowest mCE, CE relative to the "
                f"{BASELINE} = 100; sequencer.md §4.6)", ok,
                "mCE: " + ", ".join(f"{k} {v:.1f}" for k, v in mce.items()) + "; mean corruption error: "
                + ", ".join(f"{k} {v['mean_error']:.1f}%" for k, v in rob.items()))
    # Sequencer ablation orderings
    st = ablation_stats(s["models"])
    for claim, pairs in ORDERINGS:
        if not all(a in st and b in st for a, b in pairs):
            continue
        ok = all(st[a]["mean"] > st[b]["mean"] for a, b in pairs)
        parts = []
        for a, b in pairs:
            d = st[a]["mean"] - st[b]["mean"]
            noise = sum(st[v]["std"] or 0 for v in (a, b))
            parts.append(f"{a} {st[a]['mean']:.2f} vs {b} {st[b]['mean']:.2f} ({d:+.2f} pts"
                         + (", within the seed spread" if abs(d) <= noise else "") + ")")
        add(f"Sequencer ablation: {claim}", ok, "; ".join(parts) + f" (mean top-1 of {len(st[pairs[0][0]]['top1'])} "
            "seeds)")
    # ViL ablations
    vil = {m["variant"]: m for m in s["models"] if m["group"] == "vil_ablation"}
    pools = {k: vil[a]["top1"] for k, a in VIL_POOLINGS.items() if a in vil}
    if len(pools) == len(VIL_POOLINGS):
        best = max(pools, key=pools.get)
        add("ViL pooling: bilateral concat (bilateral_flatten, the paper's choice for v2) is the best pooling",
            best == "bilateral_flatten", ", ".join(f"{k} {v:.2f}%" for k, v in pools.items()) + " (one seed)")
    dirs = {k: vil[a]["top1"] for k, a in VIL_DIRECTIONS.items() if a in vil}
    if len(dirs) == len(VIL_DIRECTIONS):
        best = max(dirs, key=dirs.get)
        add("ViL direction design: alternating (the paper's choice) beats unidirectional and quad-alternating",
            best == "alternating", ", ".join(f"{k} {v:.2f}%" for k, v in dirs.items()) + " (one seed)")
    return res


def write_summary(out: Path, s: dict) -> None:
    s = dict(s, claims=claims(out, s), ablations=dict(sequencer=ablation_stats(s["models"])))
    models = [dict(m, run=str(Path(m["run"]).relative_to(out)), checkpoint=str(Path(m["checkpoint"]).relative_to(out)))
              for m in s["models"]]  # relative paths: the folder may be moved or committed
    trained = sum(m["train_s"] or 0 for m in models)
    s["timings_s"] = dict(s["timings_s"], training_recorded=round(trained, 1))
    write_json(out / "summary.json", dict(s, models=models))
    plot_summary(out, s)
    (out / "summary.md").write_text(summary_md(out, dict(s, models=models)))


def plot_summary(out: Path, s: dict) -> None:
    comp = [m for m in s["models"] if m["group"] == "compared"]
    if comp:
        with C.figure(out / "accuracy.png", 1, 1, figsize=(6, 4)) as (_, ax):
            for m in comp:
                rows = read_summary(Path(m["run"]))
                ax.plot([r["epoch"] + 1 for r in rows], [r["top1"] for r in rows], marker="o", label=m["name"])
            ax.axhline(MIN_TOP1, color="gray", ls="--", lw=0.8)
            ax.set(xlabel="epoch", ylabel="test top-1 (%)", title="compared models, Fashion-MNIST 28 px")
            ax.legend(fontsize=7)
    st = s["ablations"]["sequencer"]
    vil = [m for m in s["models"] if m["group"] == "vil_ablation"]
    if st or vil:
        with C.figure(out / "ablations.png", 1, 2, figsize=(11, 4)) as (_, (a, b)):
            for i, (v, r) in enumerate(st.items()):
                a.bar(i, r["mean"], color="tab:blue", alpha=0.6)
                a.plot([i] * len(r["top1"]), r["top1"], "k.", ms=5)
            a.set_xticks(range(len(st)), list(st), rotation=40, ha="right", fontsize=7)
            if st:
                lo = min(min(r["top1"]) for r in st.values())
                a.set_ylim(lo - 2, max(max(r["top1"]) for r in st.values()) + 1)
            a.set(ylabel="test top-1 (%)", title="Sequencer ablations (bar: mean, dots: seeds)")
            for i, m in enumerate(vil):
                b.bar(i, m["top1"], color="tab:orange", alpha=0.7)
            b.set_xticks(range(len(vil)), [m["variant"].replace("vil_tiny_", "") for m in vil], rotation=40,
                         ha="right", fontsize=7)
            if vil:
                b.set_ylim(min(m["top1"] for m in vil) - 2, max(m["top1"] for m in vil) + 1)
            b.set(ylabel="test top-1 (%)", title="ViL ablations (one seed)")


def _kwargs(kwargs: dict) -> str:
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in kwargs.items()) or "(as registered)"


def _section(out: Path, rel: str, png: str | None = None) -> str:
    f = out / rel
    if not f.is_file():
        return "(not run yet)\n"
    return f.read_text() + (f"\n![{png}]({Path(rel).parent / png})\n" if png and (f.parent / png).is_file() else "")


def summary_md(out: Path, s: dict) -> str:
    quick = s["mode"] == "quick"
    models = s["models"]
    comp = [m for m in models if m["group"] == "compared"]
    t = s["timings_s"]
    recipe = get_recipe(s["recipe"])
    rest = ", ".join(f"{k}={v}" for k, v in recipe.items() if k not in s["recipe_overrides"]
                     and k not in ("model", "workers", "epochs"))
    overrides = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in s["recipe_overrides"].items())
    reused = [m["name"] for m in models if m["reused"]]
    lines = [
        "# Fashion-MNIST reproduction - " + ("CI-scale QUICK run (pipeline check only; numbers mean nothing)\n\n"
                                            if quick else "full data on a CPU\n\n"),
        f"- command: `{s['command']}` (started {s['started']})\n",
        f"- device: {s['device']}; runtime: --workers {s['runtime']['workers']} --threads {s['runtime']['threads']}\n",
        f"- wall time: this invocation {t.get('this_invocation')} s; training as recorded when each run was trained "
        f"{t.get('training_recorded')} s ({t.get('training_recorded', 0) / 60:.1f} min)"
        + (f"; reused from earlier invocations: {len(reused)} runs" if reused else "") + "\n",
        f"- training: the engine (`lstmvision train`), recipe `{s['recipe']}` for every model with the overrides "
        f"`{overrides}` plus each run's `--epochs` (and `--seed` for the ablations); the rest of the recipe: {rest}. "
        "Exact per-run commands in summary.json; per-epoch logs in training/NAME/summary.csv. top-1 is the final "
        "epoch's on the 10,000 test images (the checkpoint the analyses use; no selection on the test set)\n",
    ]
    if s["errors"]:
        lines.append("- FAILED steps: " + "; ".join(s["errors"]) + "\n")
    lines += ["\n## Claims, as this run measured them\n\n"]
    for c in s["claims"]:
        lines.append(f"- **{c['verdict']}** - {c['claim']}: {c['detail']}\n")
    if quick:
        lines.append("- QUICK run: the models are barely trained, so none of these lines tests a claim.\n")
    lines += ["\n## Compared models\n\n",
              C.markdown_table(["model", "architecture", "model kwargs", "params", "epochs", "top-1 % (final)",
                                "best epoch top-1 %", "train s", "s / epoch"],
                               [[m["name"], m["architecture"], _kwargs(m["model_kwargs"]), f"{m['params']:,}",
                                 m["epochs"], m["top1"], m["best_top1"], m["train_s"], m["epoch_s"]] for m in comp]),
              "\n![accuracy](accuracy.png)\n" if (out / "accuracy.png").is_file() else ""]
    st = s["ablations"]["sequencer"]
    lines.append("\n## Sequencer ablations\n\n")
    if st:
        any_ = next(iter(st.values()))
        lines.append(f"`sequencer2d_tiny` with `{_kwargs(ABLATION_BASE[s['mode']])}` (hidden = C/4 as in "
                     f"sequencer2d_s) and each variant's change, {any_['epochs']} epochs, seeds "
                     f"{', '.join(map(str, ABLATION_SEEDS[s['mode']]))}; mean, sample std and range of the final "
                     "test top-1.\n\n")
        lines.append(C.markdown_table(
            ["variant", "official counterpart", "model kwargs", "params", "top-1 per seed", "mean", "std", "range"],
            [[v, r["official"], _kwargs(r["model_kwargs"]), f"{r['params']:,}",
              " / ".join(f"{x:.2f}" for x in r["top1"]), f"{r['mean']:.2f}",
              _f(r["std"]) if r["std"] is not None else "-", f"{r['min']:.2f}-{r['max']:.2f}"]
             for v, r in st.items()]))
    else:
        lines.append("(not run yet)\n")
    vil = [m for m in models if m["group"] == "vil_ablation"]
    lines.append("\n## ViL ablations\n\n")
    if vil:
        lines.append(f"The v1 ablation configs with `{_kwargs(VIL_ABLATION_BASE[s['mode']])}`, "
                     f"{vil[0]['epochs']} epoch(s) on "
                     f"{VIL_ABLATION_EXTRA[s['mode']].get('limit_train', 'all the')} training images, one seed (0). "
                     "Poolings use the alternating design; the "
                     "directions use v1's bilateral_avg pooling, so the alternating row is "
                     "vil_tiny_pool_bilateral_avg (the same network as vil_tiny_dir_alternating).\n\n")
        by = {m["variant"]: m for m in vil}
        rows = [["pooling", k, a, f"{by[a]['params']:,}", by[a]["top1"]] for k, a in VIL_POOLINGS.items() if a in by]
        rows += [["direction", k, a, f"{by[a]['params']:,}", by[a]["top1"]]
                 for k, a in VIL_DIRECTIONS.items() if a in by]
        lines.append(C.markdown_table(["ablation", "setting", "architecture", "params", "top-1 %"], rows))
    else:
        lines.append("(not run yet)\n")
    if st or vil:
        lines.append("\n![ablations](ablations.png)\n")
    lines += ["\n## Resolution sweep (0.5x-2x, no fine-tuning)\n\n",
              _section(out, "resolution/resolution.md", "resolution.png"),
              "\n## ERF (default layers: every stage of hierarchical models, 4 evenly spaced blocks of isotropic ones)"
              "\n\n", _section(out, "erf/erf.md", "erf.png"), "\n## Robustness\n\n"]
    lines.append(_section(out, "robustness/mce.md"))
    lines.append("\nPer-corruption plots: " + ", ".join(f"[{m['name']}](robustness/{m['name']}/robustness.png)"
                                                       for m in comp) + "\n")
    lines += ["\n## Memory and throughput vs resolution (28 px to 8x)\n\n",
              _section(out, "memory/memory.md", "memory.png"),
              "\nViL with the chunkwise mLSTM forced at every size (the default switches from the quadratic parallel "
              "form to chunkwise above 256 tokens):\n\n", _section(out, "memory_vil_chunkwise/memory.md"),
              "\n## Timings (s)\n\n",
              C.markdown_table(["step", "seconds"], [[k, v] for k, v in t.items()]),
              "\nPer-run training times: summary.json (`models[].train_s`).\n"]
    return "".join(lines)


if __name__ == "__main__":
    sys.exit(main())
