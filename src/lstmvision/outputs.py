"""The one rule for every file lstmvision writes (results, predictions, pictures, exports, run folders):

- an output never replaces a file the same command reads: its data and annotations, the checkpoint files and
  configs it loads, the model it exports; not even with --overwrite;
- an existing output is replaced only with --overwrite;
- every file is written through a temporary file in the same folder and renamed, so nobody sees half a file.

`check_outputs` applies the first two before any work; `atomic_write` / `write_text` do the third. A leaf: it
imports only `errors`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from lstmvision.errors import os_reason

PathLike = str | os.PathLike

# the checkpoint folders of a training run, newest commit first (engine.checkpoint keeps `.NAME.old` mid-swap)
CHECKPOINT_NAMES = ("best", "last", ".best.old", ".last.old")
# what a training run folder holds besides its checkpoints, read back by --resume
RUN_FILES = ("config.yaml", "summary.csv")


def file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, None otherwise: the same file under any name or link."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through a temp file in the same folder, fsync, then rename: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # some writers (safetensors) create private 0600 files: give the normal mode a new file gets
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically (its folders made), a failure as one line naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Path(p).write_text(text))
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {os_reason(e)}") from None


def checkpoint_reads(path: PathLike | None) -> list[Path]:
    """What loading weights from `path` reads: the file itself, or a saved folder, or a training run folder's
    checkpoint folders and run files (a run resumes from them)."""
    if path is None or not isinstance(path, (str, os.PathLike)):
        return []
    path = Path(path)
    if not path.is_dir():
        return [path]
    inside = [path / n for n in CHECKPOINT_NAMES if (path / n).is_dir()]
    return [*inside, *(path / n for n in RUN_FILES)] if inside else [path]


def within(path: PathLike, folder: PathLike) -> bool:
    """Whether `path` is `folder` or lies inside it (links resolved); False when either cannot be resolved."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except OSError:
        return False


def read_by(output: Path, reads: Iterable[PathLike]) -> Path | None:
    """The input among `reads` that writing `output` would replace: the same file (under any name or link), or a
    folder the command reads that holds it. None when `output` does not exist yet."""
    if not (output.exists() or output.is_symlink()):
        return None
    out_id = file_id(output)
    for source in map(Path, reads):
        if source.is_dir():
            if within(output, source):
                return source
        elif out_id is not None and file_id(source) == out_id:
            return source
    return None


def check_outputs(outputs: Iterable[PathLike], reads: Iterable[PathLike] = (), overwrite: bool = False) -> list[Path]:
    """Refuse, before any work, in one line naming the file: an output that would replace something the command
    reads (always), an existing output without `overwrite`, a folder where the file goes, a file where one of
    its folders should be, a place where no file can be made. Returns the outputs as paths."""
    reads = [Path(r) for r in reads if r is not None]
    paths = [Path(p) for p in outputs]
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(f"cannot write {path}: it is a folder")
        source = read_by(path, reads)
        if source is not None:
            what = "the input" if file_id(source) == file_id(path) else "a file inside the input"
            raise FileExistsError(f"{path} would replace {what} {source}: an input of this command is never "
                                  "replaced, even with --overwrite; choose another output")
        if not overwrite and (path.exists() or path.is_symlink()):
            raise FileExistsError(f"{path} exists; give --overwrite to replace it, or choose another output")
        check_creatable(path.parent, path)
    return paths


def outside(files: Iterable[Path], folder: PathLike | None) -> list[Path]:
    """`files` without those inside output `folder`: the outputs of an earlier run are not inputs."""
    if folder is None:
        return list(files)
    return [f for f in files if not within(f, Path(folder))]


def check_output_folder(folder: PathLike, flag: str, reads: Iterable[PathLike] = ()) -> Path:
    """Refuse, before any work, an output folder that is a file, lies under a file or where nothing can be made,
    or that is a folder whose files the command reads: outputs mixed into the inputs would be read back as
    inputs by the next run. (A subfolder of an input folder is fine: the commands leave it out of their
    inputs.)"""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot write to {folder}: it is a file, not a folder ({flag} takes a folder)")
    for source in (Path(r) for r in reads if r is not None):
        if source.is_dir() and os.path.realpath(folder) == os.path.realpath(source):
            raise ValueError(f"{flag} {folder} is the input folder {source}: the outputs would mix with the "
                             "inputs; choose another folder (a subfolder is fine)")
    check_creatable(folder, folder)
    return folder


def check_run_folder(run_dir: PathLike, reads: Iterable[PathLike] = ()) -> Path:
    """Refuse a new training run folder that holds something the run reads (its initial checkpoint, its data) or
    lies inside it: the run's checkpoints would be written over them."""
    run_dir = Path(run_dir)
    for source in (Path(r) for r in reads if r is not None):
        if not (source.exists() or source.is_symlink()):
            continue
        if within(source, run_dir) or (source.is_dir() and within(run_dir, source)):
            raise FileExistsError(f"the run folder {run_dir} would hold or lie inside {source}, an input of this "
                                  "run: choose another --experiment or --output")
    return run_dir


def check_creatable(folder: Path, target: Path) -> None:
    """That a file can be made in `folder`, or in the nearest existing folder above it (where `folder` will be
    made): tried with a nameless temporary file, which also catches what os.access misses (root, read-only
    file systems)."""
    try:
        existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
        is_dir = existing.is_dir()
    except OSError as e:
        raise PermissionError(f"cannot write {target}: {os_reason(e)}") from None
    if not is_dir:
        raise NotADirectoryError(f"cannot write {target}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write {target}: {os_reason(e)}") from None
