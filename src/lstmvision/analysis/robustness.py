"""`lstmvision robustness`: the ImageNet-C protocol on any dataset, plus FGSM / PGD (sequencer.md §4.6).

Corruptions: the 15 ImageNet-C corruptions x 5 severities (`lstmvision.analysis.corruptions`), applied on the fly to
each image after it is resized to the model's input size (ImageNet-C corrupts 224 px images; crop_pct 1.0 as the
official `validate_c.py`). Each (image, corruption, severity) uses its own fixed seed, so two models see exactly
the same corrupted images.

Scores (E = top-1 error in [0, 1]):
- CE_c = mean_s E_{c,s} / E^AlexNet_c with the published AlexNet errors, mCE = 100 * mean_c CE_c, when the
  dataset is ImageNet (`--imagenet yes`, or auto: the model has 1000 classes);
- otherwise, against `--baseline MODEL` (evaluated on the same corrupted images):
  CE_c = sum_s E_{c,s} / sum_s E^base_{c,s} and the relative
  rCE_c = sum_s (E_{c,s} - E_clean) / sum_s (E^base_{c,s} - E^base_clean); mCE / relative mCE = 100 * their means;
- the unnormalised mean error is always reported.

Adversarial (`--attack fgsm|pgd --eps E`): as the official repo (advertorch), untargeted, in pixel space [0, 1]
with the normalisation moved into the model; eps default 1/255, PGD 5 steps of 0.5/255 with a random start. The
model is in eval mode with its RNNs in train mode, as their backward needs (the official `train_rnn`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lstmvision.analysis import common as C
from lstmvision.analysis.corruptions import ALEXNET_ERR, CORRUPTIONS, SEVERITIES, corrupt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH", help="trained model folder")
    p.add_argument("--model", metavar="NAME", help="registered name or timm:NAME (random init unless --pretrained)")
    p.add_argument("--pretrained", help="weights for --model")
    p.add_argument("--baseline", metavar="SPEC", help="model (folder, name or timm:NAME) to normalise CE against")
    p.add_argument("--imagenet", choices=["auto", "yes", "no"], default="auto",
                   help="use the AlexNet constants (auto: when the model has 1000 classes)")
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), metavar="NAME",
                   help="subset of the 15 corruptions (default all)")
    p.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES), help="subset of 1..5")
    p.add_argument("--no-corruptions", action="store_true", help="skip ImageNet-C (e.g. attacks only)")
    p.add_argument("--img-size", type=int, help="input size (default: the model's training size)")
    p.add_argument("--attack", choices=["fgsm", "pgd"], help="also measure adversarial top-1")
    p.add_argument("--eps", type=C.parse_fraction, default=1 / 255, help="L-inf budget in [0, 1] (default 1/255)")
    p.add_argument("--pgd-steps", type=int, default=5)
    p.add_argument("--pgd-step-size", type=C.parse_fraction, default=0.5 / 255)
    C.add_common_arguments(p)


# ------------------------------------------------------------------------------------------ scores
def ce_alexnet(err: dict[str, dict[int, float]]) -> dict[str, float]:
    """{corruption: mean_s E / E_AlexNet}. `err[c][s]` are top-1 errors in [0, 1]."""
    out = {}
    for c, per_s in err.items():
        if c not in ALEXNET_ERR:
            raise ValueError(f"no AlexNet constant for {c!r}")
        out[c] = float(np.mean(list(per_s.values()))) / ALEXNET_ERR[c]
    return out


def ce_baseline(err, base_err, clean: float, base_clean: float) -> tuple[dict[str, float], dict[str, float]]:
    """({c: CE_c}, {c: relative CE_c}) against a baseline model's errors on the same images (see module doc)."""
    ce, rce = {}, {}
    for c, per_s in err.items():
        e = np.array([per_s[s] for s in sorted(per_s)])
        b = np.array([base_err[c][s] for s in sorted(per_s)])
        ce[c] = float(e.sum() / b.sum()) if b.sum() > 0 else float("nan")
        denom = float((b - base_clean).sum())
        rce[c] = float((e - clean).sum() / denom) if denom > 0 else float("nan")
    return ce, rce


def mean_pct(d: dict[str, float]) -> float:
    return 100.0 * float(np.mean(list(d.values())))


# ----------------------------------------------------------------------------------------- attacks
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of size eps (inputs in [0, 1])."""
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 5,
        step_size: float = 0.5 / 255, generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD with a uniform random start in the eps-ball (advertorch LinfPGDAttack semantics)."""
    delta = (torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1) * eps
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta + step_size * g.sign()).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return (x + delta).detach()


def adversarial_top1(net: nn.Module, batches, device, attack: str, eps: float, steps: int, step_size: float,
                     seed: int = 0) -> tuple[float, float]:
    """(adversarial top-1 %, max |x_adv - x|) of `net` (taking [0, 1] inputs)."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    correct = total = 0
    max_delta = 0.0
    with C.rnns_in_train_mode(net):
        for x, y in tqdm(batches, desc=f"{attack} eps={eps:.4g}", leave=False):
            x, y = x.to(device), y.to(device)
            adv = fgsm(net, x, y, eps) if attack == "fgsm" else pgd(net, x, y, eps, steps, step_size, g)
            max_delta = max(max_delta, (adv - x).abs().max().item())
            with torch.no_grad():
                correct += (net(adv).argmax(1) == y).sum().item()
            total += y.numel()
    return 100.0 * correct / max(total, 1), max_delta


# --------------------------------------------------------------------------------------------- CLI
def _corrupted_batches(ds, indices, size, in_chans, name, severity, args):
    def fn(img, i):
        img = C.resize_image(img.convert("RGB"), size, args.crop_pct, args.interpolation)
        if name is not None:
            img = corrupt(np.asarray(img), name, severity, seed=args.seed * 1_000_003 + i)
        return C.to_model_tensor(img, in_chans)

    return C.loader(C.MappedDataset(ds, indices, fn), args.batch_size, args.workers)


def corruption_errors(model, ds, indices, size, args, device) -> tuple[float, dict[str, dict[int, float]]]:
    """(clean error, {corruption: {severity: error}}) in [0, 1]."""
    from tqdm import tqdm

    mean, std = C.model_norm(model)
    in_chans = C.model_in_chans(model)
    net = C.Normalized(model, mean, std).to(device).eval()
    clean = 1 - C.top1(net, _corrupted_batches(ds, indices, size, in_chans, None, 0, args), device, "clean") / 100
    err: dict[str, dict[int, float]] = {}
    jobs = [(c, s) for c in args.corruptions for s in args.severities]
    for c, s in tqdm(jobs, desc=f"{model.label} ImageNet-C"):
        acc = C.top1(net, _corrupted_batches(ds, indices, size, in_chans, c, s, args), device, f"{c} s{s}",
                     progress=False)
        err.setdefault(c, {})[s] = 1 - acc / 100
    return clean, err


def _check(args) -> None:
    if bool(args.checkpoint) == bool(args.model):
        raise ValueError("give exactly one of --checkpoint PATH or --model NAME")
    bad = [c for c in args.corruptions if c not in CORRUPTIONS]
    if bad:
        raise ValueError(f"unknown corruption {bad[0]!r}; choose from {', '.join(CORRUPTIONS)}")
    bad_s = [s for s in args.severities if s not in SEVERITIES]
    if bad_s:
        raise ValueError(f"severities must be in 1..5, got {bad_s}")
    if not 0 < args.eps <= 1:
        raise ValueError(f"--eps must be in (0, 1] (pixel range [0, 1]; e.g. 1/255), got {args.eps}")
    if args.pgd_steps < 1:
        raise ValueError("--pgd-steps must be at least 1")
    if args.no_corruptions and not args.attack:
        raise ValueError("--no-corruptions leaves nothing to do without --attack")


def run(args: argparse.Namespace) -> int:
    _check(args)
    device = C.resolve_device(args.device)
    model = C.load_model(args.checkpoint or args.model, args.pretrained, args.num_classes, args.in_chans)
    ds = C.open_dataset(args.data, args.split)
    indices = C.subset_indices(len(ds), args.limit, args.seed)
    size = args.img_size or C.model_native_size(model)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report: dict = dict(model=model.label, data=str(args.data), split=args.split, images=len(indices), img_size=size,
                        device=C.device_description(device))
    if not args.no_corruptions:
        clean, err = corruption_errors(model, ds, indices, size, args, device)
        imagenet = args.imagenet == "yes" or (args.imagenet == "auto" and getattr(model, "num_classes", 0) == 1000)
        report.update(clean_top1=100 * (1 - clean), top1={c: {str(s): 100 * (1 - e) for s, e in d.items()}
                                                         for c, d in err.items()},
                      mean_error=mean_pct({c: float(np.mean(list(d.values()))) for c, d in err.items()}))
        if imagenet:
            if set(args.severities) != set(SEVERITIES):
                print("note: the AlexNet constants average all 5 severities; this mCE uses a subset")
            ce = ce_alexnet(err)
            report.update(normalisation="AlexNet (ImageNet-C)", ce={c: 100 * v for c, v in ce.items()}, mce=mean_pct(ce))
        if args.baseline:
            base = C.load_model(args.baseline, None, args.num_classes, args.in_chans)
            bclean, berr = corruption_errors(base, ds, indices, args.img_size or C.model_native_size(base), args, device)
            ce, rce = ce_baseline(err, berr, clean, bclean)
            report.update(baseline=dict(model=base.label, clean_top1=100 * (1 - bclean),
                                        top1={c: {str(s): 100 * (1 - e) for s, e in d.items()} for c, d in berr.items()}),
                          ce_vs_baseline={c: 100 * v for c, v in ce.items()}, mce_vs_baseline=mean_pct(ce),
                          relative_ce_vs_baseline={c: 100 * v for c, v in rce.items()},
                          relative_mce_vs_baseline=mean_pct(rce))
    if args.attack:
        mean, std = C.model_norm(model)
        in_chans = C.model_in_chans(model)
        net = C.Normalized(model, mean, std).to(device).eval()
        batches = _corrupted_batches(ds, indices, size, in_chans, None, 0, args)
        acc, max_delta = adversarial_top1(net, batches, device, args.attack, args.eps, args.pgd_steps,
                                          args.pgd_step_size, args.seed)
        report["adversarial"] = dict(attack=args.attack, eps=args.eps, top1=acc, max_abs_perturbation=max_delta,
                                     **({"steps": args.pgd_steps, "step_size": args.pgd_step_size}
                                        if args.attack == "pgd" else {}))
    report["seconds"] = round(time.time() - t0, 1)
    C.write_json(out / "robustness.json", report)
    md = table(report)
    (out / "robustness.md").write_text(md)
    if "top1" in report:
        plot(report, out / "robustness.png")
    print(md)
    print(f"wrote {out / 'robustness.json'}, robustness.md" + (", robustness.png" if "top1" in report else ""))
    return 0


def table(r: dict) -> str:
    lines = [f"Robustness of {r['model']} on {r['data']} ({r['split']}, {r['images']} images, {r['img_size']} px); "
             f"device: {r['device']}\n"]
    if "top1" in r:
        sev = sorted({int(s) for d in r["top1"].values() for s in d})
        head = ["corruption", *[f"s{s}" for s in sev], "mean"]
        for key, label in (("ce", "CE (AlexNet)"), ("ce_vs_baseline", "CE vs baseline"),
                           ("relative_ce_vs_baseline", "rel. CE vs baseline")):
            if key in r:
                head.append(label)
        rows = []
        for c, d in r["top1"].items():
            vals = [d[str(s)] for s in sev]
            row = [c, *vals, float(np.mean(vals))]
            for key in ("ce", "ce_vs_baseline", "relative_ce_vs_baseline"):
                if key in r:
                    row.append(r[key][c])
            rows.append(row)
        lines.append(f"Clean top-1 {r['clean_top1']:.2f}%; mean corruption error {r['mean_error']:.2f}%"
                     + (f"; mCE {r['mce']:.1f}" if "mce" in r else "")
                     + (f"; mCE vs {r['baseline']['model']} {r['mce_vs_baseline']:.1f}, relative mCE "
                        f"{r['relative_mce_vs_baseline']:.1f} (baseline clean {r['baseline']['clean_top1']:.2f}%)"
                        if "mce_vs_baseline" in r else "") + "\n")
        lines.append("Top-1 (%) per corruption and severity:\n")
        lines.append(C.markdown_table(head, rows))
    if "adversarial" in r:
        a = r["adversarial"]
        lines.append(f"\n{a['attack'].upper()} eps={a['eps']:.5f}: adversarial top-1 {a['top1']:.2f}% "
                     f"(max |delta| {a['max_abs_perturbation']:.5f})\n")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    """Top-1 per corruption (mean over the severities run) for the model and the baseline, clean as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["top1"])
    series = [(r["model"], r["top1"], r["clean_top1"])]
    if "baseline" in r:
        b = r["baseline"]
        series.append((b["model"] + " (baseline)", b["top1"], b["clean_top1"]))
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 4))
    width = 0.8 / len(series)
    for i, (label, top1, clean) in enumerate(series):
        vals = [float(np.mean(list(top1[c].values()))) for c in names]
        bars = ax.bar(np.arange(len(names)) + i * width, vals, width, label=label)
        ax.axhline(clean, color=bars.patches[0].get_facecolor(), ls="--", lw=1)
    ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("top-1 (%), mean over severities; dashed = clean")
    ax.set_title(f"Corruption robustness of {r['model']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
