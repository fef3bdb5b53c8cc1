"""`lstmvision robustness`: the ImageNet-C protocol on any dataset, plus FGSM / PGD (sequencer.md §4.6).

Corruptions: the 15 ImageNet-C corruptions x 5 severities (`lstmvision.commands.analysis.corruptions`), applied on the fly to
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

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from lstmvision.commands.analysis import common as C
from lstmvision.commands.analysis.corruptions import ALEXNET_ERR, CORRUPTIONS, SEVERITIES, corrupt
from lstmvision.device import resolve_device


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


# ------------------------------------------------------------------------------------------- report
def _corrupted_batches(data: C.EvalImages, size: int, in_chans: int, name: str | None, severity: int, seed: int):
    def fn(img, i):
        img = data.resize(img.convert("RGB"), size)
        if name is not None:
            img = corrupt(np.asarray(img), name, severity, seed=seed * 1_000_003 + i)
        return C.to_model_tensor(img, in_chans)

    return data.batches(fn)


def corruption_errors(model: nn.Module, data: C.EvalImages, size: int, corruptions: list[str], severities: list[int],
                      device: torch.device, seed: int = 0) -> tuple[float, dict[str, dict[int, float]]]:
    """(clean error, {corruption: {severity: error}}) in [0, 1]."""

    mean, std = C.model_norm(model)
    in_chans = C.model_in_chans(model)
    net = C.Normalized(model, mean, std).to(device).eval()
    clean = 1 - C.top1(net, _corrupted_batches(data, size, in_chans, None, 0, seed), device, "clean") / 100
    err: dict[str, dict[int, float]] = {}
    jobs = [(c, s) for c in corruptions for s in severities]
    for c, s in tqdm(jobs, desc=f"{model.label} ImageNet-C"):
        acc = C.top1(net, _corrupted_batches(data, size, in_chans, c, s, seed), device, f"{c} s{s}", progress=False)
        err.setdefault(c, {})[s] = 1 - acc / 100
    return clean, err


def check_robustness_settings(corruptions: list[str], severities: list[int], eps: float, pgd_steps: int) -> None:
    bad = [c for c in corruptions if c not in CORRUPTIONS]
    if bad:
        raise ValueError(f"unknown corruption {bad[0]!r}; choose from {', '.join(CORRUPTIONS)}")
    bad_s = [s for s in severities if s not in SEVERITIES]
    if bad_s:
        raise ValueError(f"severities must be in 1..5, got {bad_s}")
    if not 0 < eps <= 1:
        raise ValueError(f"--eps must be in (0, 1] (pixel range [0, 1]; e.g. 1/255), got {eps}")
    if pgd_steps < 1:
        raise ValueError("--pgd-steps must be at least 1")


def _corruption_report(model: nn.Module, data: C.EvalImages, size: int, corruptions: list[str],
                       severities: list[int], baseline: nn.Module | None, imagenet: str, baseline_size: int | None,
                       device: torch.device, seed: int) -> dict:
    clean, err = corruption_errors(model, data, size, corruptions, severities, device, seed)
    report: dict = dict(clean_top1=100 * (1 - clean),
                        top1={c: {str(s): 100 * (1 - e) for s, e in d.items()} for c, d in err.items()},
                        mean_error=mean_pct({c: float(np.mean(list(d.values()))) for c, d in err.items()}))
    if imagenet == "yes" or (imagenet == "auto" and getattr(model, "num_classes", 0) == 1000):
        if set(severities) != set(SEVERITIES):
            print("note: the AlexNet constants average all 5 severities; this mCE uses a subset")
        ce = ce_alexnet(err)
        report.update(normalisation="AlexNet (ImageNet-C)", ce={c: 100 * v for c, v in ce.items()}, mce=mean_pct(ce))
    if baseline is not None:
        bsize = baseline_size or C.model_native_size(baseline)
        bclean, berr = corruption_errors(baseline, data, bsize, corruptions, severities, device, seed)
        ce, rce = ce_baseline(err, berr, clean, bclean)
        report.update(baseline=dict(model=baseline.label, clean_top1=100 * (1 - bclean),
                                    top1={c: {str(s): 100 * (1 - e) for s, e in d.items()} for c, d in berr.items()}),
                      ce_vs_baseline={c: 100 * v for c, v in ce.items()}, mce_vs_baseline=mean_pct(ce),
                      relative_ce_vs_baseline={c: 100 * v for c, v in rce.items()},
                      relative_mce_vs_baseline=mean_pct(rce))
    return report


def robustness_report(model: nn.Module, data: C.EvalImages, output: str | Path,
                      corruptions: list[str] | None = None, severities: list[int] | None = None,
                      baseline: nn.Module | None = None, imagenet: str = "auto", img_size: int | None = None,
                      attack: str | None = None, eps: float = 1 / 255, pgd_steps: int = 5,
                      pgd_step_size: float = 0.5 / 255, device: torch.device | None = None, seed: int = 0,
                      overwrite: bool = False, reads: Sequence[str | Path] = ()) -> dict:
    """Corruption errors (all 15 x 5 unless `corruptions` / `severities` say; none with `corruptions=[]`), CE
    against AlexNet (`imagenet`: 'yes', 'no', 'auto' = 1000 classes) and/or `baseline`, and with `attack` the
    adversarial top-1 of `model` (with `.label`, from `models.loading.create_model`) on `data` (see the module docstring);
    writes robustness.json, .md (and .png) to `output` and returns the report."""
    corruptions = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    severities = list(SEVERITIES) if severities is None else list(severities)
    check_robustness_settings(corruptions, severities, eps, pgd_steps)
    if not corruptions and not attack:
        raise ValueError("no corruptions and no attack: nothing to do")
    device = device or resolve_device(None)
    size = img_size or C.model_native_size(model)
    out = C.report_folder(output, "robustness", overwrite, reads)
    t0 = time.time()
    report: dict = dict(model=model.label, data=data.name, split=data.split, images=len(data.dataset), img_size=size,
                        device=C.device_description(device))
    if corruptions:
        report.update(_corruption_report(model, data, size, corruptions, severities, baseline, imagenet, img_size,
                                         device, seed))
    if attack:
        mean, std = C.model_norm(model)
        net = C.Normalized(model, mean, std).to(device).eval()
        batches = _corrupted_batches(data, size, C.model_in_chans(model), None, 0, seed)
        acc, max_delta = adversarial_top1(net, batches, device, attack, eps, pgd_steps, pgd_step_size, seed)
        report["adversarial"] = dict(attack=attack, eps=eps, top1=acc, max_abs_perturbation=max_delta,
                                     **({"steps": pgd_steps, "step_size": pgd_step_size} if attack == "pgd" else {}))
    report["seconds"] = round(time.time() - t0, 1)
    C.write_report(out, "robustness", report, table(report), plot if "top1" in report else None)
    return report


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
    names = list(r["top1"])
    series = [(r["model"], r["top1"], r["clean_top1"])]
    if "baseline" in r:
        b = r["baseline"]
        series.append((b["model"] + " (baseline)", b["top1"], b["clean_top1"]))
    with C.figure(path, figsize=(max(5, 0.6 * len(names) + 2), 4)) as (_, ax):
        width = 0.8 / len(series)
        for i, (label, top1, clean) in enumerate(series):
            vals = [float(np.mean(list(top1[c].values()))) for c in names]
            bars = ax.bar(np.arange(len(names)) + i * width, vals, width, label=label)
            ax.axhline(clean, color=bars.patches[0].get_facecolor(), ls="--", lw=1)
        ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("top-1 (%), mean over severities; dashed = clean")
        ax.set_title(f"Corruption robustness of {r['model']}")
        ax.legend(fontsize=7)
