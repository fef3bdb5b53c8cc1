"""An exclusive lock on a training run folder, so that two trainings never write into one folder (they would
delete each other's staged checkpoints).

The lock is `flock` on `<run folder>/.lock`: the operating system releases it when its process ends in any way
(a crash, SIGKILL, a lost node), so a lock can never outlive its holder. The holder writes its pid, host, start
time and command into the file; a second process refused the lock names them. A clean release removes the file;
a file left behind (its holder was killed) is a stale lock: the next run takes it over and says so.

Where `flock` is missing (Windows) or refused by the file system (some network mounts), the run goes on
unlocked, with a warning.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunFolderBusy(ValueError):
    """Another process holds the run folder's lock (reported as one line)."""


def _holder(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"


def _read(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        info = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


class RunLock:
    """The lock of one run folder, held from `acquire` until `release` (or the end of the process).

    `stale` is what the previous holder wrote when it ended without releasing the lock (it was killed), else
    None. Use as a context manager or call `release`."""

    def __init__(self, folder: Path, fd: int | None, created: bool, stale: dict[str, Any] | None = None):
        self.folder, self.path = folder, folder / LOCK_NAME
        self._fd, self._created, self.stale = fd, created, stale

    @classmethod
    def acquire(cls, folder: str | os.PathLike, what: str = "training") -> "RunLock":
        """Lock `folder` (created if missing) at once, or raise RunFolderBusy naming the holder."""
        folder = Path(folder)
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return cls(folder, None, created)
        path = folder / LOCK_NAME
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                info = _read(fd)
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise RunFolderBusy(
                        f"{folder} is in use by another {what} ({_holder(info)}): wait for it to end (or stop it), "
                        "or write into another folder (--experiment / --output)") from None
                warnings.warn(f"cannot lock the run folder {folder} ({e.strerror or e}); going on without a lock: "
                              "do not start a second training into it", stacklevel=2)
                return cls(folder, None, created)
            if _same_file(fd, path):  # not the file of a holder that released (removed) it meanwhile
                break
            os.close(fd)
        else:
            raise RunFolderBusy(f"{folder}: could not take the run folder's lock (it keeps changing hands)")
        stale = _read(fd) or None
        record = dict(pid=os.getpid(), host=socket.gethostname(), started=datetime.now().isoformat(timespec="seconds"),
                      command=" ".join(sys.argv)[:1000])
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return cls(folder, fd, created, stale)

    @property
    def stale_message(self) -> str | None:
        """One line on a taken-over stale lock, or None."""
        if not self.stale:
            return None
        return (f"{self.folder} was locked by {_holder(self.stale)}, which ended without releasing it (killed?); "
                "the lock is taken over")

    def release(self) -> None:
        """Remove the lock file and unlock (and remove the folder when this lock created it and it stayed empty)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if _same_file(fd, self.path):
                try:
                    self.path.unlink()  # before unlocking: a waiter that opened it sees it gone and retries
                except OSError:
                    pass
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        if self._created:
            self._created = False
            try:
                self.folder.rmdir()  # only when empty: nothing was written
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
