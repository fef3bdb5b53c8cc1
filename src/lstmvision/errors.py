"""Error helpers shared by every layer. A leaf: imports nothing."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): one line for the user."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
