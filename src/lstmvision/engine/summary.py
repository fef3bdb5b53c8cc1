"""The run folder's record of training: summary.csv (one row per epoch) and curves.png, written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from lstmvision.engine.run import TrainingError  # noqa: E402
from lstmvision.outputs import atomic_write  # noqa: E402
from lstmvision.tasks import Task  # noqa: E402


def summary_fields(task: Task) -> list[str]:
    return ["epoch", "train_loss", "val_loss", *task.metrics, "lr", "img_s"]


def write_file(path: Path, write) -> None:
    """`atomic_write`, with a failed write (full disk, ...) as one TrainingError line."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise TrainingError(f"could not write {path} ({e.strerror or e})") from None


def write_summary(run_dir: Path, rows: list[dict[str, Any]], task: Task) -> None:
    fields = summary_fields(task)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in fields})
    write_file(run_dir / "summary.csv", lambda p: Path(p).write_text(buf.getvalue()))


def read_summary(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "summary.csv"
    if not f.is_file():
        return []
    with open(f) as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def plot_curves(run_dir: Path, rows: list[dict[str, Any]], task: Task) -> None:
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    a.plot(ep, [r["val_loss"] for r in rows], "o-", label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    for key in task.metrics:
        b.plot(ep, [r[key] for r in rows], "o-", label=key)
    b.set_xlabel("epoch"), b.set_ylabel("validation (%)"), b.legend(), b.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    write_file(run_dir / "curves.png", lambda p: fig.savefig(p, format="png", dpi=80))
    plt.close(fig)
