"""Error helpers shared by every layer. A leaf: imports nothing."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): one line for the user; for an
    error a DataLoader worker re-raised, the worker's own message (`worker_message`)."""
    text = str(e).strip()
    return worker_message(text) or (text.splitlines()[0] if text else type(e).__name__)


def worker_message(text: str) -> str | None:
    """The original message of an error a DataLoader worker re-raised ("Caught X in DataLoader worker process
    N" + the worker's traceback, whose last line is "module.X: message"), else None."""
    lines = text.strip().splitlines()
    if len(lines) > 2 and lines[0].startswith("Caught ") and "worker" in lines[0] and ": " in lines[-1]:
        return lines[-1].split(": ", 1)[1]
    return None


def os_reason(e: OSError) -> str:
    """What went wrong in words, without errno and path: 'permission denied', 'read-only file system'."""
    text = e.strerror or first_line(e)
    return text[:1].lower() + text[1:]
