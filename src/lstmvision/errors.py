"""Error helpers shared by every layer. A leaf: imports nothing."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): one line for the user."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def os_reason(e: OSError) -> str:
    """What went wrong in words, without errno and path: 'permission denied', 'read-only file system'."""
    text = e.strerror or first_line(e)
    return text[:1].lower() + text[1:]
