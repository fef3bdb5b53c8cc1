"""`lstmvision export`: ONNX and TorchScript exports of any registered model, each verified against PyTorch.

ONNX goes through torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): it writes one
self-contained file, maps every recurrent layer onto the ONNX `LSTM`/`GRU`/`RNN` op and, with dynamic axes,
handles any batch and image size (the row/column sequence lengths and batch follow the input's shape). The
dynamo exporter would need `onnxscript` and writes external data files, so it is not used.

TorchScript uses `torch.jit.script`, which keeps the model's control flow, so the scripted model takes any
batch and size by construction.

After writing, the file is loaded back (onnxruntime for ONNX, `torch.jit.load` for TorchScript) and run on
random inputs next to the PyTorch model: at the export size, at another batch size with `dynamic_batch`, and
at another image size with `dynamic_size`. The largest absolute difference must stay within `tolerance`.
The model's preprocessing (`pretrained_cfg`) and class names are stored in the file's metadata.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as max_opset

from lstmvision.constants import DEFAULT_OPSET, EXPORT_FORMATS, EXPORT_TOLERANCE, MIN_OPSET, TASK_MODELS
from lstmvision.errors import os_reason
from lstmvision.models.hub import save_for_hf
from lstmvision.models.loading import create_model
from lstmvision.outputs import check_output_folder, check_outputs, checkpoint_reads
from lstmvision.weights import jsonable_cfg

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
ONNX_PACKAGES = ("onnx", "onnxruntime")  # the [export] extra


class ExportError(ValueError):
    """An export that cannot be done as asked (reported as one line by the CLI)."""


@dataclass
class Check:
    batch: int
    height: int
    width: int
    max_abs_diff: float

    def __str__(self) -> str:
        return f"batch {self.batch} at {self.height}x{self.width}: max |Δ| = {self.max_abs_diff:.2e}"


@dataclass
class ExportResult:
    path: Path
    format: str
    checks: list[Check] = field(default_factory=list)
    tolerance: float = EXPORT_TOLERANCE

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=float("nan"))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and self.max_abs_diff <= self.tolerance


# --------------------------------------------------------------------------------------------- shapes
def export_size(model: nn.Module, img_size: int | tuple[int, int] | None = None) -> tuple[int, int, int]:
    """(C, H, W) to export at: `img_size` or the model's `pretrained_cfg['input_size']`."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    chans, h, w = cfg.get("input_size", (3, 224, 224))
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return int(chans), int(h), int(w)


def other_size(model: nn.Module, h: int, w: int) -> tuple[int, int]:
    """A second image size for the dynamic-size check: taller and narrower, and still valid for the model."""
    step = max(int(getattr(model, "min_input_size", 1) or 1), 1)
    h2 = max(step, (h + h // 4) // step * step)
    w2 = max(step, (w - w // 8) // step * step)
    if (h2, w2) == (h, w):
        h2 += step
    return h2, w2


def metadata(model: nn.Module) -> dict[str, str]:
    cfg = jsonable_cfg(model)
    meta = {"architecture": str(getattr(model, "model_name", type(model).__name__)), "pretrained_cfg": json.dumps(cfg)}
    names = getattr(model, "class_names", None)
    if names:
        meta["class_names"] = json.dumps(list(names))
    return meta


# ---------------------------------------------------------------------------------------- exporters
@contextlib.contextmanager
def _write_errors(path: Path):
    """A file-system refusal (read-only, a file where a folder should be, ...) as one ExportError line."""
    try:
        yield
    except OSError as e:
        raise ExportError(f"cannot write {path}: {os_reason(e)}") from None


def _writable(path: str | Path) -> Path:
    """`path` with its folder created (an ExportError if that is impossible) and not itself a folder."""
    path = Path(path)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ExportError(f"cannot write {path}: {blocker} is a file, not a folder")
    with _write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a folder; give a file name such as {path / 'model.onnx'}")
    return path


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int, int],
    batch_size: int = 1,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write `model` as one ONNX file (TorchScript-based exporter); returns the path."""
    import onnx  # noqa: PLC0415 (optional dependency: the [export] extra)

    if not MIN_OPSET <= opset <= max_opset:
        raise ExportError(f"--opset {opset} is not supported: choose {MIN_OPSET}..{max_opset} (default {DEFAULT_OPSET})")
    path = _writable(path)
    axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        axes[INPUT_NAME] = {0: "batch"}
        axes[OUTPUT_NAME] = {0: "batch"}
    if dynamic_size:
        axes.setdefault(INPUT_NAME, {}).update({2: "height", 3: "width"})
    x = torch.randn(batch_size, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript-based exporter
        try:
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes=axes or None, do_constant_folding=True,
            )
        except (ValueError, FileNotFoundError):
            raise
        except OSError as e:
            raise ExportError(f"cannot write {path}: {os_reason(e)}") from None
        except Exception as e:  # the exporter raises many error types; report the first line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"ONNX export of {getattr(model, 'model_name', 'model')} failed: {first}") from None
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for key, value in metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with _write_errors(path):
        onnx.save(proto, str(path))
    return path


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Write `torch.jit.script(model)` with the model's metadata as extra files; returns the path."""
    if type(model).__name__ == "VisionLSTM":
        raise ExportError(
            "TorchScript export is not supported for Vision-LSTM (vil*) models (their mLSTM code is not "
            "scriptable): export them to ONNX, or deploy with torch.compile"
        )
    path = _writable(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is marked deprecated in torch 2.15
        try:
            scripted = torch.jit.script(model)
        except Exception as e:  # TorchScript's frontend raises several error types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{getattr(model, 'model_name', 'model')} cannot be scripted: {first}") from None
        extra = {f"{k}.json" if k != "pretrained_cfg" else "config.json": v for k, v in metadata(model).items()}
        with _write_errors(path), open(path, "wb") as f:  # torch.jit.save reports open errors as RuntimeError
            torch.jit.save(scripted, f, _extra_files=extra)
    return path


# ------------------------------------------------------------------------------------- verification
def _runner(path: Path, fmt: str):
    if fmt == "onnx":
        import onnxruntime as ort  # noqa: PLC0415 (optional dependency: the [export] extra)

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(np.asarray(session.run(None, {INPUT_NAME: x.numpy()})[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    return run


def verify(
    path: str | Path,
    fmt: str,
    model: nn.Module,
    input_size: tuple[int, int, int],
    batch_size: int = 1,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    seed: int = 0,
) -> list[Check]:
    """Run the exported file and the PyTorch model on the same random inputs; one `Check` per shape."""
    chans, h, w = input_size
    shapes = [(batch_size, h, w)]
    if dynamic_batch:
        shapes.append((batch_size + 2, h, w))
    if dynamic_size:
        h2, w2 = other_size(model, h, w)
        shapes.append((batch_size + 2 if dynamic_batch else batch_size, h2, w2))
    run = _runner(Path(path), fmt)
    gen = torch.Generator().manual_seed(seed)
    checks = []
    model = model.eval().cpu()
    for b, hh, ww in shapes:
        x = torch.randn(b, chans, hh, ww, generator=gen)
        with torch.no_grad():
            ref = model(x)
        try:
            out = run(x)
        except Exception as e:  # onnxruntime / TorchScript runtime errors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"the exported model fails on a {tuple(x.shape)} input: {first}") from None
        if tuple(out.shape) != tuple(ref.shape):
            raise ExportError(f"exported model gives shape {tuple(out.shape)} for {tuple(x.shape)}, expected {tuple(ref.shape)}")
        checks.append(Check(b, hh, ww, float((out.float() - ref.float()).abs().max())))
    return checks


def check_request(output: str | Path, fmt: str | None = None, batch_size: int = 1, opset: int | None = None,
                  overwrite: bool = False, reads: Sequence[str | Path] = ()) -> str:
    """The format of an export to `output`, or one error for a request that cannot be done as asked (checked
    before any model is built): no format, a format the suffix contradicts (`m.onnx` with torchscript), --opset
    without ONNX, ONNX without its packages, a batch size below 1, a folder at `output`, an output that would
    replace one of `reads` (the weights exported) or, without `overwrite`, an existing file."""
    output = Path(output)
    by_suffix = SUFFIXES.get(output.suffix.lower())
    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    given, fmt = fmt, fmt or by_suffix
    if fmt is None:
        raise ExportError(f"cannot tell the format from {output.name!r}: give --format {{{','.join(EXPORT_FORMATS)}}}")
    if opset is not None and fmt != "onnx":
        raise ExportError("--opset applies to ONNX only, not to TorchScript")
    if opset is not None and not MIN_OPSET <= opset <= max_opset:
        raise ExportError(f"--opset {opset} is not supported: choose {MIN_OPSET}..{max_opset} (default {DEFAULT_OPSET})")
    if given is not None and by_suffix is not None and by_suffix != given:
        raise ExportError(f"--format {given} contradicts the output name {output.name} ({output.suffix} is "
                          f"{by_suffix}): "
                          f"name the file {output.with_suffix('.onnx' if given == 'onnx' else '.pt').name}")
    if batch_size < 1:
        raise ExportError(f"--batch-size must be at least 1, got {batch_size}")
    if output.is_dir():
        raise ExportError(f"cannot write {output}: it is a folder; give a file name such as {output / 'model.onnx'}")
    missing = [m for m in ONNX_PACKAGES if fmt == "onnx" and importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install 'lstmvision[export]'")
    check_outputs([output], reads, overwrite)
    return fmt


def weights_read(model: nn.Module) -> list[Path]:
    """The local checkpoint files and folders `model` was loaded from (its `weights_source`), if any."""
    source = getattr(model, "weights_source", None)
    return checkpoint_reads(source) if isinstance(source, str) and Path(source).exists() else []


def export_hf(model: nn.Module, folder: str | Path, overwrite: bool = False,
              reads: Sequence[str | Path] = ()) -> tuple[Path, float | None]:
    """`model` as a Hugging Face Hub repo folder (`save_for_hf`: timm's and transformers' files and a model card;
    a run's recipe and final metrics in the card when the model was loaded from a run folder), then loaded back:
    (folder, the largest |Δ| between the two models' logits; None for segmentation and detection models). A folder
    that holds files needs `overwrite`; a folder the model was read from is refused."""
    folder = check_output_folder(folder, "--output", reads)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ExportError(f"{folder} already holds files; pass --overwrite to write the model into it")
    save_for_hf(model, folder)
    task = (getattr(model, "pretrained_cfg", None) or {}).get("task")
    if task in TASK_MODELS:
        return folder, None
    again = create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        diff = (model(x).float() - again(x).float()).abs().max().item()
    model.train(was_training)
    return folder, diff


def check_model(model: nn.Module) -> None:
    """Refuse what export cannot do for this model, before any tracing: segmentation (UperNet) and detection
    models, whose outputs are not one logits tensor."""
    task = (getattr(model, "pretrained_cfg", None) or {}).get("task")
    if task in TASK_MODELS:
        name = getattr(model, "label", None) or getattr(model, "model_name", None) or "the model"
        raise ExportError(f"{name} is {TASK_MODELS[task]}: export takes classification models only")


def export(
    model: nn.Module,
    output: str | Path,
    fmt: str | None = None,
    img_size: int | tuple[int, int] | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int | None = None,
    tolerance: float = EXPORT_TOLERANCE,
    overwrite: bool = False,
) -> ExportResult:
    """Export `model` to `output` as ONNX or TorchScript and verify it (see the module docstring). The file is
    written aside and renamed into place once verified (then also when it exceeds the tolerance, as the result
    says); an existing file is replaced only with `overwrite`."""
    output = Path(output)
    fmt = check_request(output, fmt, batch_size, opset, overwrite, weights_read(model))
    check_model(model)
    model = model.eval().cpu()
    size = export_size(model, img_size)
    output = _writable(output)
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    try:
        if fmt == "onnx":
            export_onnx(model, tmp, size, batch_size, dynamic_batch, dynamic_size, opset or DEFAULT_OPSET)
        else:
            # a scripted model keeps the model's control flow: any batch and size work, the flags only add checks
            export_torchscript(model, tmp)
        checks = verify(tmp, fmt, model, size, batch_size, dynamic_batch, dynamic_size)
        with _write_errors(output):
            os.replace(tmp, output)
    except ExportError as e:  # name the file asked for, not the temporary one
        raise ExportError(str(e).replace(str(tmp), str(output))) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(output, fmt, checks, tolerance)
