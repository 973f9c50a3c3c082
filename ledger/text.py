"""Text as the ledger takes it from outside (arguments, the environment, URLs)."""

from __future__ import annotations


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: bytes that are not UTF-8 (an argument's, the
    environment's) come to Python as lone surrogates (``\\udcff``), which neither PostgreSQL
    nor JSON nor a URL can hold."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
